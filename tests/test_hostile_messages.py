"""Messages that misled (issue 19, point 8): paths Hydra's grammar cannot read unquoted, a built-in
optimizer option's keys carried into another class, a subset larger than the data, and run files
that are not what their names say."""

import json
import shlex

import pytest
import torch
from test_report import fake_run

from conftest import FAST_TOY, assert_one_line_error
from dlcli.cli import home_expanded


def test_a_home_path_works_unquoted_as_the_shell_would_expand_it(dlcli, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert home_expanded("data.root=~/pictures/pets").endswith("/pictures/pets'")
    assert home_expanded("data.root=~/a,~/b") == "data.root=~/a,~/b"  # a sweep's list: Hydra's word stands
    assert home_expanded("~model.width") == "~model.width"  # Hydra's delete, not a path
    assert home_expanded("--cfg") == "--cfg"
    proc = dlcli("eval", "checkpoint=~/runs/best.pt", env={"HOME": str(home)})
    assert_one_line_error(proc, f"{home}/runs/best.pt does not exist")


def test_a_value_hydra_cannot_read_unquoted_gets_the_quoting_that_works(dlcli, tmp_path):
    proc = dlcli("train", "data=image_folder", "data.root=/tmp/Über", "--cfg", "job")
    assert_one_line_error(proc, "data.root", "quote it", "\"data.root='/tmp/Über'\"")
    assert "hydra.cc" not in proc.stderr and "Lexer" not in proc.stderr
    suggested = shlex.split(proc.stderr.strip().rsplit(": ", 1)[1])
    proc = dlcli("train", "data=image_folder", *suggested, "--cfg", "job")
    assert proc.returncode == 0 and "root: /tmp/Über" in proc.stdout, proc.stderr


def test_a_path_with_a_space_split_by_the_shell_is_told_how_to_quote_it(dlcli, tmp_path):
    proc = dlcli("predict", "checkpoint=run/best.pt", "inputs=my", "photos/")
    assert_one_line_error(proc, "'photos/' is not an override", "\"inputs='my photos/'\"")
    suggested = shlex.split(proc.stderr.strip().rsplit(": ", 1)[1])
    proc = dlcli("predict", "checkpoint=run/best.pt", *suggested, "--cfg", "job")
    assert proc.returncode == 0 and "inputs: my photos/" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_optimizer_custom_holds_only_the_learning_rate_for_any_torch_optim_class(dlcli, tmp_path):
    proc = dlcli("train", "optimizer=custom", "optimizer._target_=torch.optim.NAdam", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("optimizer:\n", 1)[1].split("scheduler:", 1)[0]
    assert section.split() == ["_target_:", "torch.optim.NAdam", "lr:", "0.001"]
    proc = dlcli(
        "train",
        *FAST_TOY,
        "optimizer=custom",
        "optimizer._target_=torch.optim.NAdam",
        "+optimizer.momentum_decay=0.005",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["optimizer"]
    assert state["target"] == "torch.optim.NAdam"
    assert [g["weight_decay"] for g in state["state"]["param_groups"]] == [0]  # nothing carried from adamw
    assert state["state"]["param_groups"][0]["momentum_decay"] == 0.005
    proc = dlcli("train", "optimizer=custom", "optimizer._target_=torch.optim.NAdam", "+optimizer.weight_decay=-1")
    assert_one_line_error(proc, "optimizer.weight_decay=-1 is invalid")
    proc = dlcli("train", "optimizer=custom")
    assert_one_line_error(proc, "optimizer._target_ is required", "optimizer._target_=torch.optim.NAdam")


@pytest.mark.slow
def test_a_subset_larger_than_the_data_is_refused_not_clamped(dlcli, tmp_path):
    proc = dlcli(
        "train",
        "data=csv",
        f"data.path={_iris(tmp_path)}",
        "data.label=species",
        "data.subset=500",
        "trainer.progress=false",
    )
    assert_one_line_error(proc, "data.subset=500 is invalid", "only 96 samples")
    assert not (tmp_path / "outputs").exists()


def test_a_summary_that_is_a_folder_is_no_running_job(dlcli, tmp_path):
    fake_run(tmp_path / "sweep" / "0", ["optimizer.lr=0.1"])
    odd = fake_run(tmp_path / "sweep" / "1", ["optimizer.lr=0.01"]) / "summary.json"
    odd.unlink()
    odd.mkdir()
    proc = dlcli("report", "sweep", "--out", "rep")
    assert_one_line_error(proc, "sweep/1/summary.json", "not a regular file")
    assert not (tmp_path / "rep").exists()


def _iris(folder):
    """A 120-row, 3-class table: 96 rows train, 24 test with the default test fraction."""
    rows = ["a,b,species"] + [f"{i % 7},{i % 5},{['x', 'y', 'z'][i % 3]}" for i in range(120)]
    path = folder / "iris.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_metrics_rows_are_named_by_their_line_in_the_file(tmp_path):
    from dlcli.sweeps import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}) + "\n\n{bad\n")
    try:
        read_jsonl(path, ("epoch",))
    except Exception as exc:
        assert "line 3 is not valid JSON" in str(exc)
    else:
        raise AssertionError("a bad line was read")
