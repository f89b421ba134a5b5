"""Sweeps: the summary table and files, pictures, failures, `dlcli report`, launchers and search."""

import csv
import json
import struct

import pytest

from conftest import FAST_TOY
from dlcli.plots import log_spaced
from dlcli.sweeps import Job, heatmap_grid, sort_jobs, varying_parameters

GRID = ["optimizer.lr=0.01,0.001", "optimizer.weight_decay=0,1e-4"]


def png_size(path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def sweep_dir(tmp_path):
    (found,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    return found


@pytest.mark.slow
def test_grid_sweep_summarizes_four_jobs_with_a_heatmap(dlcli, tmp_path):
    proc = dlcli("train", "-m", *FAST_TOY, *GRID)
    assert proc.returncode == 0, proc.stderr
    sweep = sweep_dir(tmp_path)
    report = json.loads((sweep / "sweep.json").read_text())
    assert len(report["jobs"]) == 4 and all(j["status"] == "ok" for j in report["jobs"])
    accs = [j["best_val_acc"] for j in report["jobs"]]
    assert accs == sorted(accs, reverse=True) and report["best"] == report["jobs"][0]["job"]
    with open(sweep / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["job"] for r in rows} == {"0", "1", "2", "3"}
    assert "4 jobs, sorted by best val acc" in proc.stdout and "★" in proc.stdout
    width, height = png_size(sweep / "sweep_heatmap.png")
    assert width > 300 and height > 200
    assert png_size(sweep / "sweep_val_acc.png")[0] > 300
    for job in range(4):
        assert png_size(sweep / str(job) / "learning_curves.png")[0] > 300
    jobs = [Job(**j) for j in report["jobs"]]
    (x_name, xs), (y_name, ys), cells = heatmap_grid(jobs, "best_val_acc")
    assert (y_name, ys) == ("optimizer.lr", [0.001, 0.01])
    assert (x_name, xs) == ("optimizer.weight_decay", [0.0, 0.0001])
    assert all(v is not None for row in cells for v in row)


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(dlcli, tmp_path):
    proc = dlcli("train", "-m", *FAST_TOY, "optimizer.lr=0.01,-1", "optimizer.weight_decay=0,1e-4")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "optimizer.lr=-1 is invalid" in proc.stderr and "2 of 4 jobs failed" in proc.stderr
    report = json.loads((sweep_dir(tmp_path) / "sweep.json").read_text())
    assert sorted(j["status"] for j in report["jobs"]) == ["failed", "failed", "ok", "ok"]
    failed = [j for j in report["jobs"] if j["status"] == "failed"]
    assert all("optimizer.lr=-1" in j["overrides"] for j in failed)
    assert all(j["reason"].startswith("optimizer.lr=-1 is invalid: a number > 0") for j in failed)
    assert "failed" in proc.stdout  # the table shows it too


@pytest.mark.slow
def test_one_job_failing_in_four_leaves_three_ok_rows(dlcli, tmp_path):
    proc = dlcli("train", "-m", *FAST_TOY, "model.depth=1,2,3,-1")
    assert proc.returncode != 0
    report = json.loads((sweep_dir(tmp_path) / "sweep.json").read_text())
    assert sorted(j["status"] for j in report["jobs"]) == ["failed", "ok", "ok", "ok"]


@pytest.mark.slow
def test_report_rebuilds_the_same_csv(dlcli, tmp_path):
    assert dlcli("train", "-m", *FAST_TOY, *GRID).returncode == 0
    sweep = sweep_dir(tmp_path)
    before = (sweep / "sweep.csv").read_text()
    (sweep / "sweep.csv").unlink()
    (sweep / "sweep_heatmap.png").unlink()
    proc = dlcli("report", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "sweep.csv").read_text() == before and (sweep / "sweep_heatmap.png").is_file()


@pytest.mark.slow
def test_report_on_a_half_finished_sweep_and_runs_side_by_side(dlcli, tmp_path):
    assert dlcli("train", "-m", *FAST_TOY, "optimizer.lr=0.01,0.001").returncode == 0
    sweep = sweep_dir(tmp_path)
    (sweep / "1" / "summary.json").unlink()  # as if job 1 were still training
    narrow = [o for o in FAST_TOY if not o.startswith("model.width=")] + ["model.width=16"]
    assert dlcli("train", *narrow, "hydra.run.dir=single").returncode == 0  # sets no optimizer.lr
    proc = dlcli("report", str(sweep), str(tmp_path / "single"), "--out", "rep", "--metric", "test_acc")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    jobs = json.loads((tmp_path / "rep" / "sweep.json").read_text())["jobs"]
    assert sorted(j["status"] for j in jobs) == ["ok", "ok", "running"]
    running = next(j for j in jobs if j["status"] == "running")
    assert running["epochs"] == 2 and running["best_val_acc"] is not None  # read from metrics.jsonl
    with open(tmp_path / "rep" / "sweep.csv") as f:
        rows = {r["job"]: r for r in csv.DictReader(f)}
    assert (rows["single"]["optimizer.lr"], rows["single"]["model.width"]) == ("", "16")
    assert (rows["0"]["optimizer.lr"], rows["0"]["model.width"]) == ("0.01", "32")


def test_report_on_a_missing_folder_is_one_line(dlcli, tmp_path):
    proc = dlcli("report", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_and_cluster_launchers_complete_a_two_job_sweep(dlcli, tmp_path, launcher):
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    proc = dlcli("train", "-m", f"hydra/launcher={launcher}", *extra, *FAST_TOY, "optimizer.lr=0.01,0.001")
    assert proc.returncode == 0, proc.stderr
    sweep = sweep_dir(tmp_path)
    report = json.loads((sweep / "sweep.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["ok", "ok"]
    if launcher == "joblib":  # two jobs at once on this machine share its cores
        import os

        expected = max(1, (os.cpu_count() or 1) // 2)
        assert f"({expected} CPU thread" in (sweep / "0" / "train.log").read_text()


@pytest.mark.slow
def test_optuna_runs_three_trials_and_survives_a_failing_one(dlcli, tmp_path):
    proc = dlcli(
        "train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *FAST_TOY, "model.dropout=choice(0.1,1.5)"
    )
    report = json.loads((sweep_dir(tmp_path) / "sweep.json").read_text())
    assert len(report["jobs"]) == 3
    statuses = [j["status"] for j in report["jobs"]]
    assert "Traceback" not in proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr  # no colour codes into a pipe
    assert proc.returncode == (1 if "failed" in statuses else 0)
    lrs = {float(j["overrides"].split("optimizer.lr=")[1].split()[0]) for j in report["jobs"]}
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-1 for lr in lrs)


def test_varying_parameters_and_sorting():
    jobs = [
        Job("0", "a=1 lr=0.1", "ok", best_val_acc=0.5),
        Job("1", "a=1 lr=0.01", "ok", best_val_acc=0.9),
        Job("2", "a=1 lr=bad", "failed"),
    ]
    assert list(varying_parameters(jobs)) == ["lr"]
    assert [j.job for j in sort_jobs(jobs, "best_val_acc")] == ["1", "0", "2"]
    assert [
        j.job
        for j in sort_jobs(
            [Job("0", "", "ok", final_train_loss=2.0), Job("1", "", "ok", final_train_loss=1.0)], "final_train_loss"
        )
    ] == ["1", "0"]


def test_log_spacing():
    assert log_spaced([0.1, 0.01, 0.001]) and log_spaced([0.3, 0.1, 0.03, 0.01])
    assert not log_spaced([0.1, 0.2, 0.3]) and not log_spaced([0, 1e-4, 1e-3])


def test_slurm_launcher_preset_composes_with_partition_gpus_and_time_limit(dlcli):
    proc = dlcli("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SlurmLauncher" in out and "partition: gpu" in out
    assert "gpus_per_node: ${trainer.devices}" in out and "timeout_min: 120" in out


def test_slurm_preset_runs_a_task_per_device():
    """A multi-process job on SLURM: as many tasks and GPUs per node as trainer.devices, read where the
    launcher reads them, in the whole composed config."""
    from hydra import compose, initialize_config_module

    import dlcli.settings  # noqa: F401  the schemas the options inherit

    with initialize_config_module("dlcli.configs", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer.devices=4", "hydra.launcher.nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
