"""`dlcli train` and `dlcli eval` end to end, as subprocesses, the way a user runs them."""

import csv
import json
import subprocess
import sys
import time

import pytest
import torch

from conftest import FAST_TOY, read_jsonl, run_dir_of

TIMING = ("epoch_seconds", "samples_per_second")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, cache_dir):
    """The first thing a new user types: `dlcli train`, defaults only."""
    import os

    where = tmp_path_factory.mktemp("toy")
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dlcli.cli", "train"], cwd=where, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return where, run_dir_of(where), time.perf_counter() - started, proc


@pytest.mark.slow
def test_default_train_reaches_95_percent_on_toy_data(toy_run):
    _, run, wall, _ = toy_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_val_acc"] >= 0.95 and summary["test_acc"] >= 0.93
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"dlcli train: {wall:.1f}s wall, val acc {summary['best_val_acc']:.4f}")


def test_run_directory_layout(toy_run):
    _, run, _, _ = toy_run
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    fields = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "samples_per_second"]
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(1, 11)) and all(list(r) == fields for r in rows)
    with open(run / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == fields and len(table) == 10
    assert float(table[-1]["val_acc"]) == pytest.approx(rows[-1]["val_acc"])
    summary = json.loads((run / "summary.json").read_text())
    for key in ("test_loss", "test_acc", "best_epoch", "best_val_acc", "params", "wall_seconds", "device", "versions"):
        assert key in summary
    assert summary["best_val_acc"] == max(r["val_acc"] for r in rows)
    assert summary["params"] == 2 * 512 + 512 + 512 * 512 + 512 + 512 * 3 + 3
    assert set(summary["versions"]) >= {"dlcli", "torch", "python"}


def test_checkpoint_holds_everything_to_resume_and_evaluate(toy_run):
    _, run, _, _ = toy_run
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "optimizer", "scheduler", "epoch", "step", "config", "metrics", "rng", "dlcli_version"):
        assert key in state
    assert state["epoch"] == 10 and len(state["metrics"]) == 10
    assert state["config"]["model"]["_target_"] == "dlcli.models.MLP" and "hydra" not in state["config"]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == json.loads((run / "summary.json").read_text())["best_epoch"]


@pytest.mark.slow
def test_eval_reports_the_same_test_accuracy_as_training(toy_run, dlcli, tmp_path):
    _, run, _, _ = toy_run
    proc = dlcli("eval", f"checkpoint={run / 'checkpoints' / 'best.pt'}")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    report = json.loads(next((tmp_path / "outputs").rglob("eval.json")).read_text())
    assert report["acc"] == summary["test_acc"] and report["loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    assert len(report["confusion"]) == 3 and sum(map(sum, report["confusion"])) == report["n"] == 1500
    assert f"{summary['test_acc']:.2%}" in proc.stdout and "confusion matrix" in proc.stdout


@pytest.mark.slow
def test_eval_on_the_validation_split(toy_run, dlcli, tmp_path):
    _, run, _, _ = toy_run
    proc = dlcli("eval", f"checkpoint={run / 'checkpoints' / 'best.pt'}", "split=val", "trainer.device=cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(next((tmp_path / "outputs").rglob("eval.json")).read_text())
    assert report["n"] == 600 and report["acc"] == json.loads((run / "summary.json").read_text())["best_val_acc"]


@pytest.mark.slow
def test_same_config_and_seed_give_identical_numbers(dlcli, tmp_path):
    runs = []
    for name in ("a", "b"):
        proc = dlcli("train", *FAST_TOY, "model.dropout=0.3", f"hydra.run.dir=runs/{name}")
        assert proc.returncode == 0, proc.stderr
        runs.append(
            [
                {k: v for k, v in r.items() if k not in TIMING}
                for r in read_jsonl(tmp_path / "runs" / name / "metrics.jsonl")
            ]
        )
    assert runs[0] == runs[1]
    other = dlcli("train", *FAST_TOY, "model.dropout=0.3", "trainer.seed=1", "hydra.run.dir=runs/c")
    assert other.returncode == 0
    assert read_jsonl(tmp_path / "runs" / "c" / "metrics.jsonl")[-1]["train_loss"] != runs[0][-1]["train_loss"]


@pytest.mark.slow
def test_resume_auto_continues_to_the_same_numbers(dlcli, tmp_path):
    common = [*FAST_TOY, "model.dropout=0.3", "scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"]
    assert dlcli("train", *common, "trainer.epochs=4", "hydra.run.dir=runs/full").returncode == 0
    assert dlcli("train", *common, "trainer.epochs=2", "hydra.run.dir=runs/cut").returncode == 0
    proc = dlcli("train", *common, "trainer.epochs=4", "trainer.resume=auto", "hydra.run.dir=runs/cut")
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout + proc.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    full = strip(read_jsonl(tmp_path / "runs" / "full" / "metrics.jsonl"))
    assert strip(read_jsonl(tmp_path / "runs" / "cut" / "metrics.jsonl")) == full and len(full) == 4
    a = json.loads((tmp_path / "runs" / "full" / "summary.json").read_text())
    b = json.loads((tmp_path / "runs" / "cut" / "summary.json").read_text())
    assert (a["test_acc"], a["test_loss"], a["best_epoch"]) == (b["test_acc"], b["test_loss"], b["best_epoch"])


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_directories(tmp_path, cache_dir):
    import os

    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dlcli.cli", "train", *FAST_TOY],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    runs = {p.parent for p in (tmp_path / "outputs").rglob("summary.json")}
    assert len(runs) == 2


@pytest.mark.slow
def test_multirun_2x2_makes_four_numbered_jobs(dlcli, tmp_path):
    proc = dlcli("train", "-m", *FAST_TOY, "optimizer.lr=0.1,0.01", "optimizer.weight_decay=0,1e-4")
    assert proc.returncode == 0, proc.stderr
    summaries = sorted((tmp_path / "outputs" / "multirun").rglob("summary.json"))
    assert [p.parent.name for p in summaries] == ["0", "1", "2", "3"]
    configs = {
        (
            json.dumps(
                torch.load(p.parent / "checkpoints" / "last.pt", weights_only=True)["config"]["optimizer"],
                sort_keys=True,
            )
        )
        for p in summaries
    }
    assert len(configs) == 4


@pytest.mark.slow
def test_lenet_on_an_mnist_subset_then_eval(dlcli, tmp_path, lenet_run):
    run = lenet_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] == 61_706
    assert summary["test_acc"] >= 0.96, summary  # 2 epochs on 9,000 images, tested on all 10,000
    proc = dlcli("eval", f"checkpoint={run / 'checkpoints' / 'best.pt'}")
    assert proc.returncode == 0, proc.stderr
    eval_json = next((tmp_path / "outputs").rglob("eval.json"))
    report = json.loads(eval_json.read_text())
    assert report["acc"] == summary["test_acc"] and report["n"] == 10_000
    for picture in ("confusion_matrix.png", "filters.png"):  # LeNet's 6 first-layer filters
        assert (eval_json.parent / picture).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible")
def test_auto_device_trains_on_cuda(dlcli, tmp_path):
    proc = dlcli("train", *FAST_TOY)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir_of(tmp_path) / "summary.json").read_text())["device"] == "cuda"


def test_accumulating_four_micro_batches_is_the_run_of_the_whole_batch(dlcli, tmp_path):
    """Without dropout (whose masks are drawn per micro-batch) the two runs differ only in float sums:
    measured, train losses within 1e-8 relative, validation losses and accuracies equal."""
    import json

    runs = {}
    for k in (1, 4):
        args = ["trainer.batch_size=128", f"trainer.accumulate={k}", "model.dropout=0", f"hydra.run.dir=a{k}"]
        proc = dlcli("train", *FAST_TOY, *args)
        assert proc.returncode == 0, proc.stderr
        runs[k] = [json.loads(line) for line in (tmp_path / f"a{k}" / "metrics.jsonl").read_text().splitlines()]
    for whole, micro in zip(runs[1], runs[4]):
        assert micro["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
        assert micro["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-6)
        assert micro["val_acc"] == whole["val_acc"]
    proc = dlcli("train", *FAST_TOY, "trainer.batch_size=100", "trainer.accumulate=8")
    assert proc.returncode != 0 and "trainer.accumulate=8 micro-batches must divide it" in proc.stderr
    assert "e.g. 96" in proc.stderr
