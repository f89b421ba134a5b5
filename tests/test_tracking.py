"""Experiment trackers (logger=tensorboard | mlflow | wandb) and early stopping, end to end and offline."""

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import FAST_TOY, read_jsonl
from dlcli.errors import ConfigError
from dlcli.trainer import stalled


@pytest.mark.slow
def test_tensorboard_has_one_val_accuracy_point_per_epoch(dlcli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = dlcli("train", *FAST_TOY, "trainer.epochs=3", "logger=tensorboard", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    points = events.Scalars("val_acc")
    assert [p.step for p in points] == [1, 2, 3]
    assert [p.value for p in points] == pytest.approx([r["val_acc"] for r in rows])
    assert {"train_loss", "val_loss", "lr", "test_acc"} <= set(events.Tags()["scalars"])
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")  # the config, in the HParams tab


@pytest.mark.slow
def test_mlflow_sweep_is_two_runs_grouped_with_params_and_metrics(dlcli, tmp_path, monkeypatch):
    """A sweep into the default SQLite store; then resuming one job continues its run."""
    import mlflow

    proc = dlcli("train", "-m", *FAST_TOY, "logger=mlflow", "optimizer.lr=0.01,0.003", "hydra.sweep.dir=sweep")
    assert proc.returncode == 0, proc.stderr
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    runs = mlflow.search_runs(experiment_names=["dlcli"], output_format="list")  # list: no pandas needed
    client = mlflow.tracking.MlflowClient(store)
    assert len(runs) == 2
    assert {r.data.params["optimizer.lr"] for r in runs} == {"0.01", "0.003"}
    assert {r.data.tags["dlcli.sweep"] for r in runs} == {str(tmp_path / "sweep")}  # grouped by their sweep
    assert all(r.info.status == "FINISHED" and "optimizer.lr=" in r.info.run_name for r in runs)
    job = next(r for r in runs if r.data.params["optimizer.lr"] == "0.01")
    rows = read_jsonl(tmp_path / "sweep" / "0" / "metrics.jsonl")
    history = client.get_metric_history(job.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["val_acc"])) for r in rows]
    assert job.data.params["trainer.epochs"] == "2" and "test_acc" in job.data.metrics
    assert {a.path for a in client.list_artifacts(job.info.run_id)} >= {
        "best.pt",
        "summary.json",
        "learning_curves.png",
    }

    # a resumed run continues the same tracked run, with the epochs it adds
    proc = dlcli(
        "train",
        *FAST_TOY,
        "logger=mlflow",
        "optimizer.lr=0.01",
        "trainer.epochs=3",
        "trainer.resume=auto",
        f"hydra.run.dir={tmp_path / 'sweep' / '0'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(client.search_runs([job.info.experiment_id])) == 2
    assert [m.step for m in client.get_metric_history(job.info.run_id, "val_acc")] == [1, 2, 3]


@pytest.mark.slow
def test_wandb_offline_writes_its_run_in_the_run_folder(dlcli, tmp_path):
    proc = dlcli("train", *FAST_TOY, "logger=wandb", "hydra.run.dir=run", env={"WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stderr
    (record,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # wandb's own binary log: its keys are stored as text
    assert b"val_acc" in data and b"test_acc" in data and b"optimizer.lr" in data


@pytest.mark.parametrize("logger, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_missing_tracker_package_names_its_extra(monkeypatch, logger, module):
    from dlcli.loggers import build_logger
    from dlcli.settings import SCHEMAS

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(ConfigError, match=rf'pip install "dlcli\[{module}\]"'):
        build_logger(SCHEMAS["logger"][logger]())


def test_an_unreachable_mlflow_server_is_one_line_at_once():
    from dlcli.loggers import _check_server

    with pytest.raises(ConfigError, match="no MLflow server answers at localhost:1"):
        _check_server("http://localhost:1")  # MLflow's client would retry for minutes


def test_a_tracker_that_fails_mid_run_is_a_warning_once_and_training_goes_on(caplog):
    from dlcli.loggers import Guarded, Logger

    class Flaky(Logger):
        calls = 0

        def log_epoch(self, row):
            Flaky.calls += 1
            raise OSError("disk full")

        def start(self, run):
            raise RuntimeError("server said no")

    guarded = Guarded(Flaky(), "flaky")
    guarded.log_epoch({"epoch": 1})
    guarded.log_epoch({"epoch": 2})
    assert Flaky.calls == 1 and caplog.text.count("logger=flaky failed (OSError: disk full)") == 1
    with pytest.raises(ConfigError, match="logger=flaky could not start its run"):
        guarded.start(None)


@pytest.mark.slow
def test_early_stopping_ends_a_stalled_run_and_says_why_to_a_logger_of_your_own(dlcli, tmp_path):
    (tmp_path / "my_logs.py").write_text(
        "from dlcli.loggers import Logger\n"
        "class Printer(Logger):\n"
        "    def __init__(self, prefix='row'):\n"
        "        self.prefix = prefix\n"
        "    def log_epoch(self, row):\n"
        "        print(self.prefix, row['epoch'], flush=True)\n"
        "    def finish(self, status, summary, files):\n"
        "        print(self.prefix, status, summary['stopped']['epoch'], [f.name for f in files], flush=True)\n"
    )
    # a learning rate of 1e-9 leaves the validation accuracy where it starts
    proc = dlcli(
        "train",
        *FAST_TOY,
        "trainer.epochs=10",
        "optimizer.lr=1e-9",
        "trainer.early_stopping.patience=2",
        "logger._target_=my_logs.Printer",
        "+logger.prefix=EPOCH",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["stopped"]["epoch"] == 3
    assert summary["stopped"]["reason"].startswith("early stopping: val_acc did not improve for 2 epochs")
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 3
    assert "early stopping after epoch 3" in proc.stdout + proc.stderr
    assert [line for line in proc.stdout.splitlines() if line.startswith("EPOCH")] == [
        "EPOCH 1",
        "EPOCH 2",
        "EPOCH 3",
        "EPOCH ok 3 ['best.pt', 'summary.json', 'learning_curves.png']",
    ]


def test_stalled_counts_epochs_since_an_improvement_larger_than_min_delta():
    rows = [{"epoch": i + 1, "val_acc": v, "val_loss": -v} for i, v in enumerate([0.5, 0.6, 0.605, 0.608, 0.607])]
    assert stalled(rows, "val_acc", None, 0.0) is None  # off
    assert stalled(rows, "val_acc", 2, 0.0) is None  # 0.608 at epoch 4 is the best, one epoch ago
    assert "it last did at epoch 2, to 0.6" in stalled(
        rows, "val_acc", 3, 0.01
    )  # +0.005 and +0.008 are not more than 0.01
    assert stalled(rows, "val_loss", 1, 0.0) is not None  # lower is better for a loss: -0.607 > -0.608
    assert stalled([], "val_acc", 1, 0.0) is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.early_stopping.patience=0", "null (off) or an integer >= 1"),
        ("trainer.early_stopping.min_delta=-1", "a number >= 0"),
        ("logger=wandb logger.mode=sometimes", "choose one of offline, online, disabled"),
        ("logger=mlflow logger.tracking_uri=plain.db", "a URI: sqlite:///path/to/mlflow.db for a local file"),
    ],
)
def test_bad_tracking_values_are_refused_before_any_work(override, message):
    from test_settings import compose_train

    from dlcli.settings import load_settings

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(compose_train(*override.split()))


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.early_stopping=3", "trainer.early_stopping is a section of keys (patience, min_delta)"),
        ("logger.tracking_uri=x.db", "the logger option chosen has no keys; choose one that does first"),
        ("logger=mlfow", "did you mean mlflow?"),
    ],
)
def test_tracking_mistakes_on_the_command_line_are_one_line(dlcli, tmp_path, override, message):
    proc = dlcli("train", *FAST_TOY, override)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_logger_class_is_found_in_the_folder_dlcli_runs_from(tmp_path, monkeypatch):
    """As the `dlcli` script runs it: unlike python -m, it does not put the working folder on sys.path."""
    from dlcli.loggers import Guarded, build_logger
    from dlcli.settings import Custom

    (tmp_path / "my_trackers.py").write_text("from dlcli.loggers import Logger\nclass Mine(Logger):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert isinstance(build_logger(Custom("my_trackers.Mine", {})), Guarded)
    with pytest.raises(ConfigError, match="cannot be imported .ModuleNotFoundError: No module named 'nope'"):
        build_logger(Custom("nope.Mine", {}))


def test_stalled_is_in_the_summary_of_a_full_run(toy_checkpoint: Path):
    summary = json.loads((toy_checkpoint.parents[1] / "summary.json").read_text())
    assert summary["stopped"] == {"epoch": 2, "reason": "completed trainer.epochs=2"}
