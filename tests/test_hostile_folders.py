"""Run folders that dlcli did not make (issue 19): it removes only what its own process made, writes a new
run only into a new or empty folder, and a resume ends with a test result and keeps what says how to resume."""

import json
import shutil

import pytest

from conftest import FAST_TOY, assert_one_line_error, read_jsonl
from dlcli.errors import ConfigError
from dlcli.files import hold, holds

INTERRUPTED = {
    "status": "interrupted",
    "reason": "SIGTERM: stopped at epoch 1, step 3 with checkpoints/last.pt "
    "saved; resume with: dlcli train trainer.resume=auto hydra.run.dir=run",
}


@pytest.fixture
def user_folder(tmp_path):
    """A folder of someone else's files: logs, and files named as a run's own."""
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in [
        ("server.log", "GET /\n"),
        ("app.log", "started\n"),
        ("metrics.csv", "day,sales\n1,3\n"),
        ("learning_curves.png", "not a picture\n"),
    ]:
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def run_copy(toy_checkpoint, tmp_path):
    """A finished toy run's folder, copied fresh."""
    return shutil.copytree(toy_checkpoint.parent.parent, tmp_path / "run")


# --- folders that were there before the process started are never removed ---------------------------------


def test_a_failing_run_into_a_folder_of_logs_leaves_it_as_it_was(dlcli, user_folder, foreign):
    unchanged = foreign(user_folder)
    proc = dlcli("train", "optimizer.lr=-1", f"hydra.run.dir={user_folder}")
    assert_one_line_error(proc, str(user_folder), "server.log", "another hydra.run.dir")
    unchanged()  # not removed, and no .lock left in it


def test_a_failing_run_into_an_empty_folder_keeps_the_folder_and_leaves_it_empty(dlcli, tmp_path, foreign):
    (tmp_path / "empty").mkdir()
    (tmp_path / "parent").mkdir()
    empty, parent = foreign(tmp_path / "empty"), foreign(tmp_path / "parent")
    assert_one_line_error(dlcli("train", "optimizer.lr=-1", "hydra.run.dir=empty"), "optimizer.lr=-1 is invalid")
    empty()
    # the two folders it made under a folder that was there go; that one stays
    assert_one_line_error(dlcli("train", "optimizer.lr=-1", "hydra.run.dir=parent/a/b"), "optimizer.lr=-1 is invalid")
    parent()


def test_a_failing_resume_of_a_run_killed_before_its_first_checkpoint_keeps_its_folder(dlcli, tmp_path):
    killed = tmp_path / "killed"
    (killed / ".hydra").mkdir(parents=True)
    # what Hydra writes before the first checkpoint: dlcli's composed config (here its top keys)
    (killed / ".hydra" / "config.yaml").write_text("model: {}\ndata: {}\ntrainer:\n  epochs: 2\n")
    (killed / "train.log").write_text("epoch 1/2 ...\n")
    proc = dlcli("train", "optimizer.lr=-1", "trainer.resume=auto", "hydra.run.dir=killed")
    assert_one_line_error(proc, "optimizer.lr=-1 is invalid")
    assert (killed / "train.log").read_text().startswith("epoch 1/2 ...\n")
    assert json.loads((killed / "summary.json").read_text())["status"] == "failed"


# --- a new run writes only into a new or empty folder --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["train", *FAST_TOY],
        ["train", *FAST_TOY, "trainer.resume=auto"],  # not a dlcli run: nothing there to continue
        ["eval", "checkpoint=best.pt"],
        ["predict", "checkpoint=best.pt", "inputs=x.npy"],
    ],
    ids=["train", "train-resume", "eval", "predict"],
)
def test_a_new_run_into_a_folder_of_files_is_refused_in_one_line(dlcli, user_folder, foreign, args):
    unchanged = foreign(user_folder)
    proc = dlcli(*args, f"hydra.run.dir={user_folder}")
    assert_one_line_error(
        proc,
        f"{user_folder} is not empty",
        "app.log, learning_curves.png, metrics.csv",
        "another hydra.run.dir (or leave it out)",
    )
    assert "trainer.resume=auto" not in proc.stderr  # no dlcli run there to continue
    assert proc.returncode == 2
    unchanged()


def test_a_sweep_into_a_folder_of_files_is_refused_in_one_line(dlcli, user_folder, foreign):
    unchanged = foreign(user_folder)
    proc = dlcli("train", "-m", *FAST_TOY, "optimizer.lr=0.1,0.01", f"hydra.sweep.dir={user_folder}")
    assert_one_line_error(proc, f"{user_folder} already holds files", "metrics.csv", "another hydra.sweep.dir")
    unchanged()


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_refused_a_runs_folder_suggest_only_what_they_take(dlcli, run_copy, foreign, command):
    unchanged = foreign(run_copy)
    inputs = ["inputs=x.npy"] if command == "predict" else []
    proc = dlcli(command, "checkpoint=run/checkpoints/best.pt", *inputs, f"hydra.run.dir={run_copy}")
    assert_one_line_error(proc, "already holds a run", "another hydra.run.dir")
    assert "trainer.resume" not in proc.stderr
    unchanged()


# --- resuming ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_refused_resume_keeps_the_interrupted_summary_and_its_resume_command(dlcli, run_copy):
    (run_copy / "summary.json").write_text(json.dumps(INTERRUPTED))
    kept = {p: p.read_bytes() for p in [run_copy / "summary.json", *(run_copy / "checkpoints").iterdir()]}
    proc = dlcli("train", *FAST_TOY, "model.width=16", "trainer.resume=auto", "hydra.run.dir=run")
    assert_one_line_error(proc, "does not fit this model")
    assert {p: p.read_bytes() for p in kept} == kept


@pytest.mark.slow
def test_a_resume_removes_the_temporary_files_a_killed_write_left(dlcli, run_copy):
    stale = [
        run_copy / "checkpoints" / ".last.pt.k3q_z9ab.tmp",
        run_copy / "checkpoints" / ".best.pt.0a1b2c3d.tmp",
        run_copy / ".metrics.csv.x7y8z9w0.tmp",
    ]
    for path in stale:
        path.write_bytes(b"PK\x03\x04 cut short")
    proc = dlcli("train", *FAST_TOY, "trainer.epochs=3", "trainer.resume=auto", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in stale if p.exists()]
    assert [r["epoch"] for r in read_jsonl(run_copy / "metrics.jsonl")] == [1, 2, 3]


@pytest.fixture
def unbeatable(toy_checkpoint, tmp_path, foreign):
    """A copy of the toy run whose last.pt claims a best val_acc of 1.0, which no epoch can beat."""
    import torch

    source = shutil.copytree(toy_checkpoint.parent.parent, tmp_path / "source")
    state = torch.load(source / "checkpoints" / "last.pt", weights_only=True)
    torch.save({**state, "best_value": 1.0}, source / "checkpoints" / "last.pt")
    return source, foreign(source)


@pytest.mark.slow
@pytest.mark.parametrize("epochs,best_epoch", [(3, 3), (2, 2)], ids=["no-epoch-beats-the-best", "no-epoch-left"])
def test_a_resume_from_another_runs_checkpoint_into_a_new_folder_ends_with_a_test_result(
    dlcli, tmp_path, unbeatable, epochs, best_epoch
):
    import torch

    source, unchanged = unbeatable
    proc = dlcli(
        "train",
        *FAST_TOY,
        f"trainer.epochs={epochs}",
        f"trainer.resume={source}/checkpoints/last.pt",
        "hydra.run.dir=new",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "new" / "summary.json").read_text())
    assert summary["status"] == "ok" and 0 <= summary["test_acc"] <= 1
    assert summary["best_epoch"] == best_epoch  # the best of the epochs in this folder: the resumed one if none
    best = torch.load(tmp_path / "new" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "new" / "checkpoints" / "last.pt", weights_only=True)
    assert best["epoch"] == best_epoch and last["epoch"] == epochs and last["best_epoch"] == best_epoch
    unchanged()


def test_a_folder_refused_by_the_check_of_hold_is_left_as_it_was_or_removed_if_hold_made_it(tmp_path, foreign):
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "notes.txt").write_text("mine\n")
    unchanged = foreign(parent)

    def refuse():
        raise ConfigError("refused")

    for folder in (parent / "a" / "b", parent):
        with pytest.raises(ConfigError):
            hold(folder, check=refuse)
        assert not holds(folder)
        unchanged()  # no a/b left, no .lock added


def test_resume_auto_does_not_take_another_hydra_apps_run_folder(dlcli, tmp_path, foreign):
    """Hydra's .hydra/ alone is no dlcli run: without dlcli's .lock or checkpoints there is nothing to
    continue, and training from scratch would overwrite the other app's files."""
    other = tmp_path / "other_app_run"
    (other / ".hydra").mkdir(parents=True)
    (other / ".hydra" / "config.yaml").write_text("lr: 0.1\n")
    (other / "metrics.csv").write_text("step,loss\n1,0.5\n")
    unchanged = foreign(other)
    proc = dlcli("train", *FAST_TOY, "trainer.resume=auto", f"hydra.run.dir={other}")
    assert_one_line_error(proc, "is not empty", "metrics.csv", "trainer.resume continues only a folder where dlcli")
    unchanged()
