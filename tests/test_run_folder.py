"""A run's folder is written by that run alone: failing commands, a second run into a folder in use,
a failed resume leave it as it was; its files get the umask's permissions."""

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST_TOY, assert_one_line_error, dlcli_env, start_dlcli, wait_for

LONG = ["trainer.epochs=500", "data.n_samples=20000", "model.width=256", "trainer.progress=false"]


def snapshot(folder):
    """Every file and folder under `folder`, hidden ones too: its mode and, for a file, its bytes."""
    return {
        p.relative_to(folder): (p.stat().st_mode, p.is_file() and hashlib.md5(p.read_bytes()).hexdigest())
        for p in folder.rglob("*")
    }


@pytest.fixture(scope="module")
def finished(toy_checkpoint):
    """A finished toy run (the session's), copied fresh by `run` for each test that may change it."""
    return toy_checkpoint.parent.parent


@pytest.fixture
def run(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


@pytest.mark.slow
def test_failing_commands_inside_a_finished_run_change_nothing_there(dlcli, run):
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    before = snapshot(run)
    for args, needle in [
        (["summary", "model.depth=-1"], "model.depth=-1 is invalid"),
        (["gradcheck", "model.depth=-1"], "model.depth=-1 is invalid"),
        (["train", "model.depth=-1"], "model.depth=-1 is invalid"),
        (["train", *FAST_TOY, "hydra.run.dir=."], "already holds a run"),
        (["eval", "checkpoint=checkpoints/missing.pt"], "does not exist"),
    ]:
        assert_one_line_error(dlcli(*args, cwd=run), needle)
        assert snapshot(run) == before, args


@pytest.mark.slow
def test_summary_and_gradcheck_write_no_file(dlcli, run):
    before = snapshot(run)
    assert dlcli("summary", cwd=run).returncode == 0
    assert dlcli("gradcheck", "model.depth=1", "model.width=8", cwd=run).returncode == 0
    assert snapshot(run) == before


def test_a_new_run_into_a_finished_runs_folder_is_refused(dlcli, run):
    before = snapshot(run)
    proc = dlcli("train", *FAST_TOY, f"hydra.run.dir={run}")
    assert_one_line_error(proc, "already holds a run", "trainer.resume=auto")
    assert proc.returncode == 2 and snapshot(run) == before


@pytest.mark.slow
def test_a_failed_resume_keeps_the_ok_summary_and_the_checkpoints(dlcli, run, cache_dir):
    kept = {p: p.read_bytes() for p in [run / "summary.json", *(run / "checkpoints").iterdir()]}
    proc = dlcli(
        "train", *FAST_TOY, "trainer.epochs=4", "model.width=16", "trainer.resume=auto", f"hydra.run.dir={run}"
    )
    assert_one_line_error(proc, "does not fit this model")
    assert {p: p.read_bytes() for p in kept} == kept

    # RLIMIT_FSIZE fails the checkpoint writes as a full disk would; summary.json is far smaller than 20 kB
    assert (run / "checkpoints" / "last.pt").stat().st_size > 30_000

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    env.pop("DLCLI_DEBUG", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlcli.cli",
            "train",
            *FAST_TOY,
            "trainer.epochs=4",
            "trainer.resume=auto",
            f"hydra.run.dir={run}",
        ],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
    )
    assert_one_line_error(proc, "could not write", "/checkpoints/")
    assert {p: p.read_bytes() for p in kept} == kept


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_is_refused_and_changes_nothing(dlcli, tmp_path, cache_dir):
    first = start_dlcli(["train", *LONG, "hydra.run.dir=run"], tmp_path, dlcli_env(cache_dir))
    try:
        wait_for(first, "epoch 1/")
        stop(first.pid)  # hold still: its folder must look the same before and after
        before = snapshot(tmp_path / "run")
        for extra in (["hydra.run.dir=run"], ["trainer.resume=auto", "hydra.run.dir=run"]):
            proc = dlcli("train", *FAST_TOY, *extra)
            assert_one_line_error(proc, "is in use by another dlcli run", f"pid {first.pid}")
            assert snapshot(tmp_path / "run") == before
        os.kill(first.pid, signal.SIGKILL)  # the OS drops its lock: no stale lock is left behind
        first.wait(timeout=60)
        proc = dlcli("train", *LONG, "trainer.epochs=2", "trainer.resume=auto", "hydra.run.dir=run")
        assert proc.returncode == 0, proc.stderr
    finally:
        first.kill()
        first.communicate()


def stop(pid: int) -> None:
    """SIGSTOP, and wait until the process has stopped: the signal is delivered asynchronously, and a
    write under way meanwhile would change the folder between two snapshots."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(500):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not stop")


@pytest.mark.slow
def test_a_sweep_and_its_jobs_hold_their_folders(dlcli, tmp_path, cache_dir):
    first = start_dlcli(
        ["train", "-m", *LONG, "optimizer.lr=0.001", "hydra.sweep.dir=sweep"], tmp_path, dlcli_env(cache_dir)
    )
    try:
        wait_for(first, "epoch 1/")
        stop(first.pid)
        before = snapshot(tmp_path / "sweep")
        for args in (
            ["-m", *FAST_TOY, "optimizer.lr=0.1,0.01", "hydra.sweep.dir=sweep"],
            [*FAST_TOY, "trainer.resume=auto", "hydra.run.dir=sweep/0"],
        ):
            assert_one_line_error(dlcli("train", *args), "is in use by another dlcli run", f"pid {first.pid}")
            assert snapshot(tmp_path / "sweep") == before
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        proc = dlcli("train", "-m", *FAST_TOY, "optimizer.lr=0.1,0.01", "hydra.sweep.dir=sweep")
        assert_one_line_error(proc, "already holds a sweep", "hydra.sweep.dir")
        assert snapshot(tmp_path / "sweep") == before
    finally:
        first.kill()
        first.communicate()


@pytest.mark.slow
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_result_files_get_the_umasks_permissions(tmp_path, cache_dir, umask, mode):
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    for args in (["train", *FAST_TOY, "hydra.run.dir=run"], ["report", "run", "--out", "report"]):
        subprocess.run(
            [sys.executable, "-m", "dlcli.cli", *args],
            cwd=tmp_path,
            env=env,
            umask=umask,
            check=True,
            capture_output=True,
        )
    files = [
        "run/summary.json",
        "run/metrics.jsonl",
        "run/metrics.csv",
        "run/checkpoints/best.pt",
        "run/checkpoints/last.pt",
        "report/sweep.csv",
        "report/sweep.json",
    ]
    assert {f: oct((tmp_path / f).stat().st_mode & 0o777) for f in files} == {f: oct(mode) for f in files}
