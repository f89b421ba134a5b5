"""Nothing lost: exact resume after SIGKILL (fault injection), SIGINT/SIGTERM, gradient clipping."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST_TOY, REPO, read_jsonl, write_images

LONGER = [
    "trainer.epochs=6",
    "data.n_samples=20000",
    "model.width=256",
    "model.dropout=0.3",
    "scheduler=onecycle",
    "trainer.progress=false",
]
TIMING = ("epoch_seconds", "samples_per_second")


@pytest.mark.slow
def test_killed_then_resumed_ends_with_the_uninterrupted_numbers(tmp_path, cache_dir):
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    # one kill, at 0.57 of the uninterrupted run's time (seed 1): inside an epoch, well after start-up; 4 of
    # LONGER's 6 epochs. The README's 10-kill run is the long one.
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "kill_resume.py"),
            "--kills",
            "1",
            "--seed",
            "1",
            "--every",
            "5",
            *LONGER,
            "trainer.epochs=4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["kills"] == 1 and result["metrics_equal"] and result["summary_equal"], result
    assert result["mid_epoch_checkpoints"] >= 1, result  # resumed from inside an epoch at least once


@pytest.mark.slow
def test_sigterm_saves_last_pt_prints_the_resume_command_and_exits_143(tmp_path, cache_dir, dlcli):
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("DLCLI_DEBUG", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "dlcli.cli", "train", *LONGER, "trainer.epochs=200", "hydra.run.dir=run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in run.stdout:  # wait until training is under way
        if line.startswith("epoch 2/"):
            break
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGTERM: stopped at epoch" in lines[0] and "Traceback" not in err
    assert (tmp_path / "run" / "train.log").read_text().count(lines[0]) == 1 and lines[0] not in out
    command = lines[0].split("resume with: ")[1]
    assert command.startswith("dlcli train ") and "trainer.resume=auto" in command
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"
    # the printed command carries on; cut it short to keep the test quick
    proc = dlcli(*command.split()[1:], "trainer.epochs=3")
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


@pytest.mark.slow
def test_sigint_exits_130(tmp_path, cache_dir):
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "dlcli.cli", "train", *LONGER, "trainer.epochs=200"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in run.stdout:
        if line.startswith("epoch 1/"):
            break
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130 and "SIGINT: stopped at epoch" in err


@pytest.mark.slow
def test_grad_clip_limits_the_update(dlcli, tmp_path):
    proc = dlcli(
        "train",
        *FAST_TOY,
        "optimizer=sgd",
        "optimizer.lr=10",
        "optimizer.momentum=0",
        "optimizer.nesterov=false",
        "trainer.grad_clip=0.01",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr  # lr=10 would blow up without clipping
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"


def test_sigkill_in_the_middle_of_a_checkpoint_write_leaves_the_old_file(tmp_path):
    """A process killed halfway through writing last.pt: the previous last.pt still loads, unchanged."""
    import torch

    from dlcli.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(3)}, "epoch": 1})
    before = path.read_bytes()
    child = f"""
import os, signal, torch
from dlcli.files import write_atomic
def half_then_die(f):
    f.write(b"PK" + b"x" * 5000)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
write_atomic({str(path)!r}, half_then_die, binary=True)
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1


KILL_AFTER_THE_MID_EPOCH_CHECKPOINT = """
import os, signal, sys
from dlcli import trainer
save = trainer.Trainer.save
def save_then_die(self, name):
    save(self, name)
    if self.progress.in_epoch is not None:
        os.kill(os.getpid(), signal.SIGKILL)
trainer.Trainer.save = save_then_die
from dlcli.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_samples_per_second_after_a_mid_epoch_resume_counts_only_what_this_process_trained(dlcli, tmp_path, cache_dir):
    """Killed 480 of 563 steps into epoch 1: the resumed epoch's rate must not count those 480 steps' samples
    against the time of the last 83 (that read ~7x too fast)."""
    import torch

    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    args = [
        "trainer.epochs=3",
        "data.n_samples=20000",
        "model.width=256",
        "trainer.batch_size=32",
        "trainer.threads=1",
        "trainer.progress=false",
        "hydra.run.dir=run",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_AFTER_THE_MID_EPOCH_CHECKPOINT,
            "train",
            *args,
            "trainer.checkpoint_every_steps=480",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 0 and state["in_epoch"]["batch"] == 480
    proc = dlcli("train", *args, "trainer.resume=auto")
    assert proc.returncode == 0, proc.stderr
    resumed, *whole = [row["samples_per_second"] for row in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert max(whole) / 3 < resumed < max(whole) * 3, (resumed, whole)


def test_the_ema_weights_are_what_is_evaluated_and_kept(dlcli, tmp_path):
    import json

    import torch

    proc = dlcli("train", *FAST_TOY, "trainer.ema.decay=0.9", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    key = next(iter(best["model"]))
    assert not torch.equal(best["model"][key], best["trained"][key])  # the average, beside the trained weights
    assert int(best["average"]["model"]["n_averaged"]) == best["step"]  # updated after every optimizer step
    proc = dlcli("eval", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'best.pt'}", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["acc"] == summary["test_acc"]


def _imbalanced_csv(folder: Path) -> Path:
    rows = [f"{(i * 7) % 13 / 13:.3f},{(i * 3) % 11 / 11:.3f},{0 if i % 10 else 1}" for i in range(3000)]
    (folder / "t.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    return folder / "t.csv"


@pytest.mark.slow
def test_swa_averages_each_epoch_from_its_start_at_its_own_lr(dlcli, tmp_path):
    import torch

    args = [*FAST_TOY, "trainer.epochs=3", "model.batch_norm=true", "trainer.swa.start=2", "trainer.swa.lr=0.01"]
    proc = dlcli("train", *args, "trainer.swa.anneal_epochs=0", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    # epoch 1 at the run's own cosine from optimizer.lr (AdamW's 0.002), epochs 2 and 3 at trainer.swa.lr
    assert rows[0]["lr"] < 0.002 and [row["lr"] for row in rows[1:]] == [0.01, 0.01]
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert int(last["average"]["model"]["n_averaged"]) == 2  # epochs 2 and 3
    mean = "hidden.0.norm.running_mean"
    assert torch.equal(last["model"][mean], last["average"]["model"][f"module.{mean}"])  # the average is kept
    assert not torch.allclose(last["model"][mean], last["trained"][mean])  # with its own statistics
    proc = dlcli("eval", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}", "split=val", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["acc"] == rows[-1]["val_acc"]


def test_swa_recomputes_batch_norm_statistics_for_the_averaged_weights():
    import torch
    from torch import nn

    from dlcli.averaging import build_average
    from dlcli.settings import SWASettings, TrainerSettings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = build_average(
        TrainerSettings(epochs=2, swa=SWASettings(start=2, lr=0.1)), model, torch.optim.SGD(model.parameters(), lr=0.1)
    )
    inputs = [torch.randn(50, 3) + 2, torch.randn(30, 3) + 2]
    average.after_epoch(model, 1, lambda: iter(inputs))
    assert not average.holds(1) and int(average.model.n_averaged) == 0  # before trainer.swa.start
    with torch.no_grad():
        model[0].weight.mul_(3)
    average.after_epoch(model, 2, lambda: iter(inputs))
    with torch.no_grad():  # the first average is the weights themselves
        batch_means = torch.stack([model[0](x).mean(0) for x in inputs])
    norm = average.model.module[1]
    # the mean over the split's batches (torch's update_bn), not a moving average nor the trained statistics
    assert torch.allclose(norm.running_mean, batch_means.mean(0), atol=1e-5)
    assert norm.momentum == model[1].momentum  # update_bn puts BatchNorm's momentum back


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["ema", "swa", "balanced_sampler", "augmentation"])
def test_killed_then_resumed_with_each_training_technique_ends_as_uninterrupted(technique, dlcli, tmp_path, cache_dir):
    toy = ["trainer.epochs=3", "data.n_samples=3000", "model.width=32", "trainer.batch_size=32"]
    args = {
        "ema": [*toy, "trainer.ema.decay=0.95"],
        # killed at step 120, in epoch 2 of 85 steps each: after the average's first update
        "swa": [*toy, "model.batch_norm=true", "trainer.swa.start=1", "trainer.swa.lr=0.01"],
        "balanced_sampler": ["trainer.epochs=3", "model.width=32", "trainer.batch_size=32"]
        + ["data=csv", f"data.path={_imbalanced_csv(tmp_path)}", "data.label=y", "data.sampler=balanced"],
        "augmentation": ["trainer.epochs=2", "trainer.batch_size=16", "data=image_folder"]
        + [f"data.root={write_images(tmp_path / 'img', 40, size=12)}", "data.mixup=0.4", "data.cutmix=1.0"]
        + ["data.policy=randaugment", "data.erasing=0.5", "data.augment=true", "data.flip=true"],
    }[technique]
    every = {"swa": 120, "augmentation": 3}.get(technique, 40)
    args = [*args, "trainer.progress=false"]
    proc = dlcli("train", *args, "hydra.run.dir=whole")
    assert proc.returncode == 0, proc.stderr
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_AFTER_THE_MID_EPOCH_CHECKPOINT,
            "train",
            *args,
            f"trainer.checkpoint_every_steps={every}",
        ]
        + ["hydra.run.dir=killed"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    proc = dlcli("train", *args, "trainer.resume=auto", "hydra.run.dir=killed")
    assert proc.returncode == 0, proc.stderr
    timing = ("epoch_seconds", "samples_per_second")
    rows = {
        name: [
            {k: v for k, v in row.items() if k not in timing} for row in read_jsonl(tmp_path / name / "metrics.jsonl")
        ]
        for name in ("whole", "killed")
    }
    assert rows["killed"] == rows["whole"]
