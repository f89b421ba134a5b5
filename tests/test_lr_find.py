"""dlcli lr-find and optimizer.lr=auto: the range test, seeded, and training that starts as it would have."""

import json

import numpy as np
import pytest

from conftest import FAST_TOY, assert_one_line_error, read_jsonl
from dlcli.errors import DivergedError
from dlcli.lr_find import SKIP, suggest

TIMING = ("epoch_seconds", "samples_per_second")
SHORT = ["trainer.lr_find.steps=60", "trainer.lr_find.start=1e-5", "trainer.lr_find.end=1"]


def test_the_suggestion_is_the_steepest_fall_before_the_lowest_loss():
    lrs = list(np.geomspace(1e-5, 1, 60))
    # flat, then falling fastest around lr 1e-3, lowest near 1e-1, then rising
    loss = [2 - np.tanh(3 * (np.log10(lr) + 3)) + (4 * (np.log10(lr) + 1) ** 2 if lr > 0.1 else 0) for lr in lrs]
    assert suggest(lrs, loss) == pytest.approx(1e-3, rel=0.25)
    with pytest.raises(DivergedError, match="stopped falling within"):
        suggest(lrs[: SKIP + 2], sorted(loss[: SKIP + 2]))  # lowest at the start: no slope to read


def test_lr_find_twice_gives_the_same_suggestion_and_its_curve(dlcli, tmp_path):
    found = []
    for name in ("a", "b"):
        proc = dlcli("lr-find", *SHORT, "data.n_samples=600", "model.width=16", f"hydra.run.dir={name}")
        assert proc.returncode == 0, proc.stderr
        record = json.loads((tmp_path / name / "lr_find.json").read_text())
        assert (tmp_path / name / "lr_find.png").stat().st_size > 10_000
        found.append(record)
    a, b = found
    assert a["suggested_lr"] == b["suggested_lr"] and a["loss"] == b["loss"]
    assert a["lr"][0] == pytest.approx(1e-5) and len(a["lr"]) == len(a["loss"]) == a["steps"] <= 60
    assert min(a["lr"]) < a["suggested_lr"] < max(a["lr"])
    assert f"suggested lr {a['suggested_lr']:.3g}" in proc.stderr + proc.stdout


def test_train_with_lr_auto_trains_as_with_the_lr_written_out(dlcli, tmp_path):
    import torch

    proc = dlcli("train", *FAST_TOY, "model.dropout=0.2", *SHORT, "optimizer.lr=auto", "hydra.run.dir=auto")
    assert proc.returncode == 0, proc.stderr
    lr = json.loads((tmp_path / "auto" / "lr_find.json").read_text())["suggested_lr"]
    summary = json.loads((tmp_path / "auto" / "summary.json").read_text())
    assert summary["lr_find"]["suggested_lr"] == lr
    state = torch.load(tmp_path / "auto" / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["optimizer"]["lr"] == lr  # eval, export and a resume see the lr it trained with
    proc = dlcli("train", *FAST_TOY, "model.dropout=0.2", f"optimizer.lr={lr!r}", "hydra.run.dir=written")
    assert proc.returncode == 0, proc.stderr
    # the test trained a copy under a forked generator: the same weights, dropout draws and numbers
    rows = {
        name: [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(tmp_path / name / "metrics.jsonl")]
        for name in ("auto", "written")
    }
    assert rows["auto"] == rows["written"]


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optimizer.lr=fast", "optimizer.lr='fast' is invalid: a number > 0, or auto"),
        ("trainer.lr_find.end=1e-8", "trainer.lr_find.end=1e-08 is invalid: a learning rate above"),
        ("trainer.lr_find.steps=5", "trainer.lr_find.steps=5 is invalid: an integer in [20, 100000]"),
    ],
)
def test_a_bad_range_test_setting_is_one_line(dlcli, override, needle):
    assert_one_line_error(dlcli("lr-find", override), needle)
