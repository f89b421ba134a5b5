"""A sweep run again with trainer.resume=auto: finished jobs kept as they were, a killed job resumed
from its last checkpoint to the numbers it would have had, the rest run, the summary whole."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, read_jsonl

TIMING = ("epoch_seconds", "samples_per_second")
JOB = ["trainer.epochs=2", "data.n_samples=1000", "model.width=16", "trainer.checkpoint_every_steps=10"]
SWEEP = ["-m", "trainer.seed=0,1,2,3,4,5", *JOB, "trainer.progress=false"]
# SIGKILL the whole sweep right after the fourth job (folder 3) saves a checkpoint inside an epoch
KILL_IN_THE_FOURTH_JOB = """
import os, signal, sys
from dlcli import trainer
save = trainer.Trainer.save
def save_then_die(self, name):
    save(self, name)
    if self.progress.in_epoch is not None and self.run_dir.name == "3":
        os.kill(os.getpid(), signal.SIGKILL)
trainer.Trainer.save = save_then_die
from dlcli.cli import main
sys.exit(main(sys.argv[1:]))
"""


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime, and the folders' mtimes."""
    found = {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }
    found.update(
        {str(p.relative_to(folder)): (b"", p.stat().st_mtime_ns) for p in [folder, *folder.rglob("*")] if p.is_dir()}
    )
    return found


def rows(path: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_jsonl(path)]


@pytest.mark.slow
def test_a_sweep_killed_in_its_fourth_job_continues_where_it_stopped(dlcli, tmp_path, cache_dir):
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_THE_FOURTH_JOB, "train", *SWEEP, "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        env={**os.environ, "DLCLI_CACHE": str(cache_dir)},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    before = {job: snapshot(sweep / job) for job in "012"}
    time.sleep(0.05)  # a rewrite would show in the mtimes
    proc = dlcli("train", *SWEEP, "hydra.sweep.dir=sweep", "trainer.resume=auto")
    assert proc.returncode == 0, proc.stderr
    assert {job: snapshot(sweep / job) for job in "012"} == before  # untouched, bytes and mtimes
    assert proc.stdout.count("finished before") == 3 and "resumed from" in proc.stderr + proc.stdout
    proc = dlcli("train", *JOB, "trainer.seed=3", "trainer.progress=false", "hydra.run.dir=whole")
    assert proc.returncode == 0, proc.stderr
    assert rows(sweep / "3" / "metrics.jsonl") == rows(tmp_path / "whole" / "metrics.jsonl")
    report = json.loads((sweep / "sweep.json").read_text())
    assert sorted(j["job"] for j in report["jobs"]) == list("012345")
    assert all(j["status"] == "ok" for j in report["jobs"])


@pytest.mark.slow
def test_a_joblib_sweep_killed_mid_job_continues_with_its_finished_jobs_kept(dlcli, tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = [*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlcli.cli", "train", *args],
        cwd=tmp_path,
        env={**os.environ, "DLCLI_CACHE": str(cache_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the launcher's worker processes die with it
    )
    deadline = time.monotonic() + 240
    while not (sweep / "3" / "checkpoints" / "last.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [p.parent.name for p in sweep.glob("*/summary.json")]
    before = {job: snapshot(sweep / job) for job in finished}
    time.sleep(0.05)
    again = dlcli("train", *args, "trainer.resume=auto")
    assert again.returncode == 0, again.stderr
    assert {job: snapshot(sweep / job) for job in finished} == before
    report = json.loads((sweep / "sweep.json").read_text())
    assert sorted(j["job"] for j in report["jobs"]) == list("012345") and {j["status"] for j in report["jobs"]} == {
        "ok"
    }
    whole = dlcli("train", *JOB, "trainer.seed=3", "trainer.progress=false", "hydra.run.dir=whole")
    assert whole.returncode == 0, whole.stderr
    assert rows(sweep / "3" / "metrics.jsonl") == rows(tmp_path / "whole" / "metrics.jsonl")


@pytest.mark.slow
def test_a_sweep_into_a_sweep_s_folder_is_refused_unless_it_continues_it(dlcli, tmp_path):
    args = [
        "-m",
        "trainer.seed=0,1",
        "trainer.epochs=1",
        "data.n_samples=300",
        "model.width=8",
        "trainer.progress=false",
    ]
    assert dlcli("train", *args, "hydra.sweep.dir=sweep").returncode == 0
    assert_one_line_error(
        dlcli("train", *args, "hydra.sweep.dir=sweep"), "or continue that sweep with trainer.resume=auto"
    )
    before = {job: snapshot(tmp_path / "sweep" / job) for job in "01"}
    other = dlcli("train", "-m", "trainer.seed=5,1", *args[2:], "hydra.sweep.dir=sweep", "trainer.resume=auto")
    assert other.returncode == 1 and "job 0: " in other.stderr and "holds the run of other overrides" in other.stderr
    assert "1 job(s) refused" in other.stderr
    assert {job: snapshot(tmp_path / "sweep" / job) for job in "01"} == before  # 0 holds another job, 1 finished


def test_an_optuna_study_is_not_continued_but_said_so(dlcli, tmp_path):
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1", "data.n_samples=300"]
    assert_one_line_error(
        dlcli("train", *args, "hydra.sweep.dir=sweep", "trainer.resume=auto"),
        "trainer.resume=auto continues sweeps of the basic sweeper, not an Optuna study",
    )
