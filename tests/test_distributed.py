"""Data-parallel training: 2 gloo CPU processes against 1, the two ways in, faults and bad input.

The MNIST subset leaves a last batch that does not divide by the batch size (3,600 training
rows in batches of 64: 56 full ones and 16 more), so uneven shares are exercised.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import FAST_TOY, start_dlcli, wait_for
from dlcli.data import batches_per_epoch, load_data, share, train_batches
from dlcli.distributed import check_devices, failure_line, place
from dlcli.errors import ConfigError
from dlcli.settings import ToyDataSettings

MNIST_RUN = [
    "data=mnist",
    "data.subset=4000",
    "model=mlp",
    "model.width=64",
    "model.dropout=0",
    "trainer.batch_size=64",
    "trainer.epochs=3",
    "trainer.device=cpu",
    "trainer.progress=false",
]
TIMING = ("epoch_seconds", "samples_per_second")


def metrics(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist_root, cache_dir):
    """The same MNIST run in one process, in two with trainer.devices=2, and in two under torchrun."""
    where = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    args = [*MNIST_RUN, f"data.root={mnist_root}"]
    done = {}
    for name, command in {
        "one": [sys.executable, "-m", "dlcli", "train", *args, "hydra.run.dir=one"],
        "two": [
            sys.executable,
            "-m",
            "dlcli",
            "train",
            *args,
            "trainer.devices=2",
            "logger=tensorboard",
            "hydra.run.dir=two",
        ],
        "torchrun": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "dlcli",
            "train",
            *args,
        ],
    }.items():
        cwd = where / name
        cwd.mkdir()
        done[name] = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done[name].returncode == 0, done[name].stderr[-3000:]
    folders = list((where / "torchrun" / "outputs").glob("*/*"))
    return {
        "where": where,
        "one": where / "one" / "one",
        "two": where / "two" / "two",
        "torchrun_folders": folders,
        "procs": done,
        "args": args,
        "env": env,
    }


@pytest.mark.slow
def test_two_processes_train_as_one_does(runs):
    one, two = metrics(runs["one"]), metrics(runs["two"])
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        # measured: relative differences of 1e-8 to 1e-7, from the order in which float sums are taken
        for key in ("train_loss", "val_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)
        assert a["lr"] == b["lr"]
        assert abs(a["val_acc"] - b["val_acc"]) <= 1 / 400  # at most one of the 400 validation images
    assert summary(runs["two"])["test_acc"] == summary(runs["one"])["test_acc"]
    assert summary(runs["two"])["processes"] == 2 and summary(runs["one"])["processes"] == 1
    log = (runs["two"] / "train.log").read_text()
    assert "2 processes (gloo)" in log and log.count("epoch 1/3") == 1  # rank 0 alone logs


@pytest.mark.slow
def test_rank_0_alone_writes_to_the_tracker(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (runs["two"] / "tensorboard").iterdir()  # one event file: rank 1 wrote none
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [p.step for p in accumulator.Scalars("val_acc")] == [1, 2, 3]


@pytest.mark.slow
def test_torchrun_equals_trainer_devices_in_one_folder(runs):
    assert len(runs["torchrun_folders"]) == 1, runs["torchrun_folders"]  # every rank followed rank 0's folder
    folder = runs["torchrun_folders"][0]
    assert metrics(folder) == metrics(runs["two"])
    assert summary(folder)["test_acc"] == summary(runs["two"])["test_acc"]
    assert sorted(p.name for p in (folder / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert (folder / "train.log").read_text().count("epoch 3/3") == 1
    assert runs["procs"]["torchrun"].stdout.count("test loss") == 1  # rank 1 kept quiet


LEAVES = """
import gc
import os
import sys
import torch
from dlcli.distributed import join, leave

gc.disable()  # cycles are then freed when leave() collects them, not whenever allocations trigger a collection


def train():  # as run_training does: DistributedDataParallel after the group has formed, then the plots
    join("cpu", 60)
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    net(torch.ones(3, 4)).sum().backward()
    import matplotlib.pyplot  # its first import leaves cycles that hold this frame, and net with it


train()
leave()
threads = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
open(f"threads.{os.environ['RANK']}", "w").write(" ".join(sorted(threads)))
"""


@pytest.mark.slow
def test_no_gloo_thread_outlives_the_group(tmp_path):
    # one left running into the interpreter's shutdown aborted rank 1 now and then (SIGABRT after a good run)
    (tmp_path / "leaves.py").write_text(LEAVES)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "leaves.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads = {r: (tmp_path / f"threads.{r}").read_text().split() for r in (0, 1)}
    assert not any("gloo" in t for names in threads.values() for t in names), threads


@pytest.mark.slow
def test_checkpoint_of_two_processes(runs, dlcli, tmp_path):
    state = torch.load(runs["two"] / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])  # DDP's wrapper is not saved
    proc = dlcli("eval", f"checkpoint={runs['two'] / 'checkpoints' / 'best.pt'}", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["acc"] == summary(runs["two"])["test_acc"]


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.slow
def test_sigterm_then_a_killed_process_then_resume_ends_as_uninterrupted(runs):
    where, env = runs["where"] / "faults", runs["env"]
    where.mkdir()
    args = [*runs["args"], "trainer.devices=2", "hydra.run.dir=run"]
    run = where / "run"

    proc = start_dlcli(["train", *args], where, env)
    wait_for(proc, "epoch 1/3")
    proc.send_signal(signal.SIGTERM)  # to the launching process: it passes it on
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlcli: error: SIGTERM: stopped at epoch"), err
    assert (run / "train.log").read_text().count("SIGTERM: stopped") == 1
    assert summary(run)["status"] == "interrupted"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no stray temp files

    proc = start_dlcli(["train", *args, "trainer.resume=auto"], where, env)
    wait_for(proc, "resumed from")
    wait_for(proc, "epoch 2/3")
    workers = _workers(proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed_at < 15  # the agent noticed and stopped the other process: no hang
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "was killed by SIGKILL; the other processes were stopped" in lines[0], err
    assert "trainer.resume=auto" in lines[0]
    assert not any(_alive(pid) for pid in workers)

    proc = subprocess.run(
        [sys.executable, "-m", "dlcli", "train", *args, "trainer.resume=auto"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert metrics(run) == metrics(runs["two"])
    assert summary(run)["test_acc"] == summary(runs["two"])["test_acc"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_sweep_of_two_process_jobs(dlcli, tmp_path):
    # one job: the sweep's path through the launcher is what this tests, not the count of jobs
    proc = dlcli(
        "train",
        "-m",
        *FAST_TOY,
        "trainer.devices=2",
        "trainer.device=cpu",
        "optimizer.lr=0.01",
        "hydra.sweep.dir=sweep",
    )
    assert proc.returncode == 0, proc.stderr
    assert summary(tmp_path / "sweep" / "0")["processes"] == 2
    assert len(json.loads((tmp_path / "sweep" / "sweep.json").read_text())["jobs"]) == 1


@pytest.mark.slow
def test_a_group_that_cannot_form_times_out_in_one_line(dlcli, tmp_path):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
    started = time.monotonic()
    proc = dlcli("train", *_toy(), "trainer.dist_timeout=1", env=env, process=True)
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "did not form a group within trainer.dist_timeout=1 s" in proc.stderr
    assert not (tmp_path / "outputs").exists()  # nothing made: the folder is decided once they meet


def _toy():
    return [*FAST_TOY, "trainer.device=cpu"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["trainer.devices=0"], "trainer.devices=0 is invalid: an integer >= 1"),
        (["trainer.devices=4", "trainer.batch_size=3"], "trainer.batch_size=3 is invalid: at least trainer.devices=4"),
        (["trainer.devices=2", "trainer.device=cuda:1"], None),
    ],
)
def test_bad_process_counts_are_one_line(dlcli, tmp_path, args, message):
    proc = dlcli("train", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    if message:
        assert message in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_more_processes_than_gpus_is_refused():
    with pytest.raises(ConfigError, match=r"trainer.devices=4 is more than the 2 GPU\(s\) visible here"):
        check_devices("cuda", 4, gpus=2)
    with pytest.raises(ConfigError, match="names one GPU"):
        check_devices("cuda:1", 2, gpus=2)
    check_devices("cuda", 2, gpus=2)
    check_devices("auto", 3, gpus=0)  # no GPU: CPU processes
    check_devices("cpu", 8, gpus=1)


def test_shares_cover_each_batch_once_in_order():
    data = load_data(ToyDataSettings(name="xor", n_samples=1000), seed=0, val_fraction=0.1, device=torch.device("cpu"))
    whole = [y for _, y, _ in train_batches(data, 64, torch.Generator().manual_seed(3))]
    parts = [list(train_batches(data, 64, torch.Generator().manual_seed(3), shard=(r, 3))) for r in range(3)]
    # 14 full batches and 4 more: one process trains them, three would get fewer than two each
    assert len(whole) == 15 and len(parts[0]) == batches_per_epoch(900, 64, 3) == 14
    for b, batch in enumerate(whole[:14]):
        shares = [parts[r][b] for r in range(3)]
        assert torch.equal(torch.cat([y for _, y, _ in shares]), batch)
        assert {n for _, _, n in shares} == {64} and sorted(len(y) for _, y, _ in shares) == [21, 21, 22]
    assert [share(10, (r, 4)) for r in range(4)] == [slice(0, 2), slice(2, 5), slice(5, 7), slice(7, 10)]
    assert batches_per_epoch(900, 64, 2) == 15 and batches_per_epoch(899, 64, 2) == 14


def test_torchrun_and_slurm_places(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert place() is None
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    assert place() == (3, 4, 1, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert place() == (1, 2, 0, 2)  # torchrun's variables win


def test_failure_line_names_the_killed_process(tmp_path):
    class Failure:
        def __init__(self, exitcode, pid, timestamp):
            self.exitcode, self.pid, self.timestamp = exitcode, pid, timestamp

    resume = "dlcli train trainer.resume=auto"
    line = failure_line({0: Failure(1, 10, 5), 1: Failure(-9, 11, 6)}, resume, tmp_path)
    assert line.startswith("process rank 1 (pid 11) was killed by SIGKILL") and "start again" in line  # no last.pt
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").touch()
    assert failure_line({0: Failure(1, 10, 5), 1: Failure(-9, 11, 6)}, resume, tmp_path).endswith(resume)
    line = failure_line({1: Failure(1, 11, 6)}, resume, tmp_path)  # a bug: resuming would meet it again
    assert "failed with exit code 1 (its error is above)" in line and "resume" not in line


@pytest.mark.slow
def test_accumulation_in_two_processes_equals_one_process_and_the_whole_batch(runs, tmp_path):
    """trainer.accumulate=4: each process's share in 4 micro-batches, the all-reduce on the last."""
    done = {}
    for name, extra in (("one", []), ("two", ["trainer.devices=2"])):
        done[name] = subprocess.run(
            [
                sys.executable,
                "-m",
                "dlcli",
                "train",
                *runs["args"],
                "trainer.accumulate=4",
                *extra,
                f"hydra.run.dir={name}",
            ],
            cwd=tmp_path,
            env=runs["env"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done[name].returncode == 0, done[name].stderr[-3000:]
    whole, one, two = metrics(runs["one"]), metrics(tmp_path / "one"), metrics(tmp_path / "two")
    for a, b, c in zip(whole, one, two):
        for key in ("train_loss", "val_loss"):
            assert b[key] == pytest.approx(c[key], rel=1e-5), (key, b, c)
            assert b[key] == pytest.approx(a[key], rel=1e-5), (key, a, b)  # the run of the whole batch
        assert abs(b["val_acc"] - c["val_acc"]) <= 1 / 400
