"""k-fold cross-validation: data.folds and data.fold, and the sweep that reports mean ± std over the folds."""

import json
import statistics

import pytest
import torch

from conftest import assert_one_line_error
from dlcli.data import load_data
from dlcli.data.bundle import fold_split
from dlcli.settings import ToyDataSettings


def test_the_folds_are_disjoint_stratified_and_cover_the_training_split():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 7)
    parts = [fold_split(labels, 5, fold, seed=3) for fold in range(5)]
    held_out = torch.cat([val for val, _ in parts])
    assert sorted(held_out.tolist()) == list(range(len(labels)))  # each sample in exactly one fold
    for val, rest in parts:
        assert sorted(torch.cat([val, rest]).tolist()) == list(range(len(labels)))
        counts = torch.bincount(labels[val], minlength=3)
        assert (counts - torch.tensor([10, 6, 1.4])).abs().max() <= 1  # every class's share, within one
    assert not torch.equal(fold_split(labels, 5, 0, seed=4)[0], parts[0][0])  # another seed, other folds


def test_each_fold_s_validation_rows_are_apart_from_the_others_and_from_the_test_split():
    def rows(split) -> set[tuple[float, float]]:
        return {tuple(p) for p in split.x.tolist()}

    bundles = [
        load_data(ToyDataSettings(n_samples=600, folds=4, fold=i), 0, 0.1, torch.device("cpu")) for i in range(4)
    ]
    vals = [rows(b.val) for b in bundles]
    test = rows(bundles[0].test)
    for i, val in enumerate(vals):
        assert val.isdisjoint(test) and val | rows(bundles[i].train) == vals[0] | rows(bundles[0].train)
        assert all(val.isdisjoint(other) for other in vals[i + 1 :])
    assert sum(map(len, vals)) == len(vals[0] | rows(bundles[0].train))  # the folds cover the training split
    assert all(torch.equal(b.test.x, bundles[0].test.x) for b in bundles)  # the test split untouched


@pytest.mark.slow
def test_a_five_fold_sweep_reports_the_mean_and_std_of_its_folds(dlcli, tmp_path):
    args = ["data.folds=5", "data.fold=range(5)", "trainer.epochs=1", "data.n_samples=500", "model.width=8"]
    proc = dlcli("train", "-m", *args, "trainer.progress=false", "hydra.sweep.dir=cv")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "cv" / "sweep.json").read_text())
    (cv,) = report["cross_validation"]
    val = {int(j["overrides"].split("data.fold=")[1].split()[0]): j["best_val_acc"] for j in report["jobs"]}
    assert cv["folds"] == [0, 1, 2, 3, 4] and cv["finished"] == 5
    assert cv["best_val_acc"]["mean"] == statistics.fmean(val.values())
    assert cv["best_val_acc"]["std"] == statistics.stdev(val.values())
    assert {int(k): v for k, v in cv["best_val_acc"]["each"].items()} == val
    assert "5-fold cross-validation" in proc.stdout and "±" in proc.stdout
    again = dlcli("report", str(tmp_path / "cv"))
    assert again.returncode == 0 and "5-fold cross-validation" in again.stdout


def test_a_fold_outside_the_folds_is_one_line(dlcli):
    assert_one_line_error(
        dlcli("train", "data.folds=5", "data.fold=5"), "data.fold=5 is invalid: the held-out part, 0 to 4"
    )
    assert_one_line_error(dlcli("train", "data.folds=1"), "data.folds=1 is invalid: an integer in [2, 1000]")
