"""Experiment trackers: the `logger=` config group (tensorboard, mlflow, wandb, or your own class).

metrics.jsonl and metrics.csv are always written; a logger sends the same per-epoch numbers (under
the same names as metrics.csv's columns) to a tracker as well. The trainer calls, in rank 0 only:

    start(run) -> id    once, before the first epoch; the id (or None) is kept in checkpoints, so a
                        resumed run continues the same tracked run
    log_epoch(row)      after each epoch, with metrics.csv's row
    finish(status, summary, files)
                        once: status ok | failed | interrupted; on ok the summary.json values and
                        the files worth keeping (best.pt, the pictures)

Each tracker's package is an optional extra, imported only when its logger is chosen.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.errors import ConfigError, DlcliError, Interrupted, first_line
from dlcli.machine import import_target, optional_package
from dlcli.settings import kwargs_of, leaves, short_name, target_of

log = logging.getLogger("dlcli")


@dataclass
class TrackedRun:
    """What a logger learns about the run it tracks."""

    run_dir: Path
    config: dict  # the resolved config
    name: str  # the run folder's name, or a sweep job's overrides
    group: str | None  # the sweep folder of a sweep's job: the jobs of one sweep are grouped by it
    resume_id: str | None  # the tracked run to continue (from the checkpoint resumed), else None
    epoch: int  # epochs already done: 0, or where a resumed run carries on


class Logger:
    """The logger interface, and `logger=none`: every call does nothing."""

    def start(self, run: TrackedRun) -> str | None:
        return None

    def log_epoch(self, row: dict) -> None:
        pass

    def finish(self, status: str, summary: dict | None, files: list[Path]) -> None:
        pass


def build_logger(spec: Any) -> Logger:
    """The logger a config names by `_target_`, called with the option's keys; None builds `Logger()`."""
    if spec is None:
        return Logger()

    target = target_of(spec)
    cls = import_target(
        target,
        "logger._target_",
        "put its module in the folder you run dlcli from or on PYTHONPATH, and name a class with start, "
        "log_epoch and finish methods (see dlcli.loggers.Logger)",
    )
    missing = [m for m in ("start", "log_epoch", "finish") if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"logger._target_={target} lacks {', '.join(missing)}: subclass dlcli.loggers.Logger")
    try:
        return Guarded(cls(**kwargs_of(spec)), short_name(spec))
    except TypeError as exc:
        raise ConfigError(f"logger._target_={target} rejected its arguments ({exc})") from None


class Guarded(Logger):
    """A tracker whose failures cannot cost the run: one that cannot start is one line before the first
    epoch; one that fails later (a lost server, a full disk) is a warning, and training goes on
    without it, with metrics.jsonl and metrics.csv as its record."""

    def __init__(self, inner: Logger, name: str) -> None:
        self.inner, self.name, self.failed = inner, name, False

    def start(self, run: TrackedRun) -> str | None:
        try:
            return self.inner.start(run)
        except DlcliError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"logger={self.name} could not start its run ({type(exc).__name__}: {first_line(exc)}); check the "
                "logger.* settings, or choose logger=none"
            ) from None

    def log_epoch(self, row: dict) -> None:
        self._call(self.inner.log_epoch, row)

    def finish(self, status: str, summary: dict | None, files: list[Path]) -> None:
        self._call(self.inner.finish, status, summary, files)

    def _call(self, method, *args) -> None:
        if self.failed:
            return
        try:
            method(*args)
        except Exception as exc:
            self.failed = True
            log.warning(
                f"logger={self.name} failed ({type(exc).__name__}: {first_line(exc)}); training goes on without it, "
                "with metrics.jsonl and metrics.csv as its record"
            )


@contextlib.contextmanager
def finishing(logger: Logger):
    """Finish the tracked run as interrupted or failed when the block raises; a run that ends well is
    finished by the caller, with its summary and files."""

    try:
        yield
    except BaseException as exc:
        logger.finish("interrupted" if isinstance(exc, (Interrupted, KeyboardInterrupt)) else "failed", None, [])
        raise


def params(config: dict) -> dict[str, Any]:
    """The config as flat dotted keys with scalar values: what trackers show as hyperparameters."""

    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for leaf, item in leaves(value, f"{key}."):
                flat[leaf] = item if isinstance(item, (int, float, str, bool)) else str(item)
        else:
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class TensorBoard(Logger):
    """Event files in the run folder, read by `tensorboard --logdir outputs` (a sweep: its folder)."""

    def __init__(self, log_dir: str = "tensorboard") -> None:
        optional_package("tensorboard", "tensorboard", "logger=tensorboard", "choose logger=none")
        self.log_dir = log_dir

    def start(self, run: TrackedRun) -> str | None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # a resumed run drops what a killed run logged after its checkpoint, then logs those epochs again
        self.writer = SummaryWriter(str(run.run_dir / self.log_dir), purge_step=run.epoch + 1 if run.epoch else None)
        if run.resume_id is None:  # the HParams tab: this run's config beside its val and test numbers
            metrics = {name: 0.0 for name in ("val_acc", "val_loss", "test_acc", "test_loss")}
            for summary in hparams(params(run.config), metrics):
                self.writer.file_writer.add_summary(summary)
        return "tensorboard"

    def log_epoch(self, row: dict) -> None:
        for name, value in row.items():
            if name != "epoch":
                self.writer.add_scalar(name, value, row["epoch"])
        self.writer.flush()

    def finish(self, status: str, summary: dict | None, files: list[Path]) -> None:
        if summary is not None:
            for name in ("test_acc", "test_loss"):
                self.writer.add_scalar(name, summary[name], summary["epochs"])
        self.writer.close()


class MLflow(Logger):
    """A run in an MLflow tracking store: by default a SQLite file under outputs/, which needs no server."""

    STATUS = {"ok": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(
        self, tracking_uri: str = "sqlite:///outputs/mlflow.db", experiment: str = "dlcli", artifacts: bool = True
    ) -> None:
        optional_package("mlflow", "mlflow", "logger=mlflow", "choose logger=none")
        self.tracking_uri, self.experiment, self.artifacts = tracking_uri, experiment, artifacts

    def start(self, run: TrackedRun) -> str | None:
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic", "urllib3"):  # their chatter (creating tables, retries) is not ours
            logging.getLogger(name).setLevel(logging.WARNING)
        uri, artifact_root = _tracking_store(self.tracking_uri)
        _check_server(uri)
        self.client = MlflowClient(uri)  # the client, not mlflow's module-level active run: no global state
        if run.resume_id is not None:
            try:
                self.client.update_run(run.resume_id, status="RUNNING")
                self.run_id = run.resume_id
                return self.run_id
            except Exception:  # another store than the run was tracked in, or the run was deleted there
                log.warning(
                    f"logger=mlflow: the run {run.resume_id} of the checkpoint is not in {uri}; the resumed "
                    "run is tracked as a new one"
                )
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(self.experiment, artifact_location=artifact_root)
            except Exception:  # another job of the sweep made it meanwhile
                experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
        tags = {"dlcli.run_dir": str(run.run_dir)}
        if run.group:
            tags["dlcli.sweep"] = run.group
        self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        from mlflow.entities import Param

        values = [Param(k, str(v)[:6000]) for k, v in params(run.config).items()]
        for i in range(0, len(values), 100):  # the store takes at most 100 params per call
            self.client.log_batch(self.run_id, params=values[i : i + 100])
        return self.run_id

    def log_epoch(self, row: dict) -> None:
        self._metrics({k: v for k, v in row.items() if k != "epoch"}, row["epoch"])

    def finish(self, status: str, summary: dict | None, files: list[Path]) -> None:
        if summary is not None:
            self._metrics({k: summary[k] for k in ("test_acc", "test_loss")}, summary["epochs"])
            for path in files if self.artifacts else ():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=self.STATUS.get(status, "FAILED"))

    def _metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])


def _check_server(uri: str) -> None:
    """A tracking server that does not answer is one line within seconds; MLflow's client would retry
    with backoff for minutes before giving up."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"logger.tracking_uri={uri}: no MLflow server answers at {parts.hostname}:{port} "
            f"({exc.strerror or exc}); start it, or track into a local file with "
            "logger.tracking_uri=sqlite:///outputs/mlflow.db"
        ) from None


def _tracking_store(uri: str) -> tuple[str, str | None]:
    """(tracking URI, artifact root for a new experiment): a relative SQLite path is made absolute
    (dlcli may run from anywhere), and its artifacts go beside the database file."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri, None
    path = Path(uri[len(prefix) :]).expanduser().absolute()  # four slashes (an absolute path) stay absolute
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"logger.tracking_uri={uri} is invalid: cannot make {path.parent} ({exc.strerror}); "
            "choose a writable place, e.g. logger.tracking_uri=sqlite:///outputs/mlflow.db"
        ) from None
    return f"{prefix}{path}", (path.parent / "mlartifacts").as_uri()


class WandB(Logger):
    """A Weights & Biases run; offline by default (files under the run folder, `wandb sync` uploads them)."""

    STATUS = {"ok": 0, "failed": 1, "interrupted": 130}

    def __init__(self, project: str = "dlcli", mode: str = "offline", entity: str | None = None) -> None:
        self.wandb = optional_package("wandb", "wandb", "logger=wandb", "choose logger=none")
        self.project, self.mode, self.entity = project, mode, entity

    def start(self, run: TrackedRun) -> str | None:
        wandb = self.wandb
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            dir=str(run.run_dir),
            name=run.name,
            group=run.group,
            id=run.resume_id,
            resume="allow" if run.resume_id else None,
            config=params(run.config),
            settings=wandb.Settings(silent=True, console="off"),
        )
        return self.run.id

    def log_epoch(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def finish(self, status: str, summary: dict | None, files: list[Path]) -> None:
        if summary is not None:
            self.run.summary.update({k: summary[k] for k in ("test_acc", "test_loss", "best_val_acc", "best_epoch")})
        self.run.finish(exit_code=self.STATUS.get(status, 1))


def start_tracking(logger, spec, run_dir: Path, config: dict, resume_state: dict | None, epoch: int) -> dict:
    """Start the logger's tracked run, continuing the one the resumed checkpoint names if it was the same
    logger's. A sweep's job is named by its overrides and grouped by its sweep folder (Hydra's files)."""
    from omegaconf import OmegaConf

    target = target_of(spec) if spec is not None else None
    before = (resume_state or {}).get("tracked") or {}
    resume_id = before.get("id") if before.get("target") == target else None
    sweep = run_dir.parent if (run_dir.parent / "multirun.yaml").is_file() else None
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    except OSError:
        overrides = []
    name = " ".join(overrides) if sweep and overrides else f"{run_dir.parent.name}/{run_dir.name}"
    run = TrackedRun(run_dir, config, name, str(sweep) if sweep else None, resume_id, epoch)
    return {"target": target, "id": logger.start(run)}
