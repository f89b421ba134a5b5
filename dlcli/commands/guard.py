"""What every dlcli command shares: the run-folder callback, one-line failures and their records."""

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from dlcli import interrupts
from dlcli.distributed import agree_on_folder, leave, lost_contact, lost_contact_line, place, rank
from dlcli.errors import ConfigError, DivergedError, DlcliError, Interrupted, ProcessesFailed, one_line
from dlcli.files import hold, holds, open_regular, release, remove_temporaries, taken_empty, undo, write_json
from dlcli.layout import CHECKPOINTS, checkpoint_dir


def run_guarded(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a Hydra task; a failure becomes one line on stderr (and in the run's log), recorded in
    the run's summary.json.

    A single run then exits non-zero. In a sweep (-m) the job returns NaN instead, so the other
    jobs still run and the sweep summary counts it as failed; unexpected errors are caught there
    too, with the traceback kept in the job's log. If a single run fails before writing anything
    but Hydra's files into a folder it found new or empty, what it put there goes, and the folder
    too if this process made it, so a typo leaves no clutter behind; a folder that was there stays.
    The failure record goes only into a folder this run holds, and never replaces a summary.json
    that says ok, nor one that says interrupted with the command that resumes. Set DLCLI_DEBUG=1
    to see tracebacks.
    Of the processes of a torchrun or SLURM run, rank 0 reports, records and cleans up.
    """

    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    multirun = hydra.mode == RunMode.MULTIRUN
    if rank() > 0:  # one of several processes (torchrun, SLURM tasks): rank 0 keeps the log
        _quiet_log(rank())
    try:
        # a single run's folder is held by RunFolder, before Hydra writes; of several processes, by rank 0
        if multirun and hydra.output_subdir is not None and rank() == 0:
            hold(run_dir, "hydra.sweep.dir")
            if OmegaConf.select(cfg, "trainer.resume", default=None) == "auto":  # a killed job's half-written files
                remove_temporaries(run_dir, CHECKPOINTS)
        return task(cfg)
    except KeyboardInterrupt as stop:  # SIGINT, or SIGTERM (interrupts.Terminated), outside training's own stop
        _say(interrupts.interrupted_line(interrupts.signum_of(stop)))
        interrupts.said()
        raise SystemExit(interrupts.exit_code(stop)) from None
    except Exception as caught:
        exc = ProcessesFailed(lost_contact_line(caught)) if lost_contact(caught) else caught
        if os.environ.get("DLCLI_DEBUG") or not (multirun or isinstance(exc, DlcliError)):
            raise  # a bug, not a user error: show the traceback
        reason = one_line(exc)
        status = {DivergedError: "diverged", Interrupted: "interrupted"}.get(type(exc), "failed")
        if not isinstance(exc, DlcliError):
            reason = f"{type(exc).__name__}: {reason}"
            _to_log_file("job failed", exc_info=exc)
        where = f"job {hydra.job.num} ({' '.join(hydra.overrides.task)}): " if multirun else ""
        if rank() > 0:  # the same errors reach every process, and rank 0 says them; not so a lost contact
            if isinstance(exc, ProcessesFailed) or not isinstance(exc, DlcliError):
                print(f"dlcli: error: [rank {rank()}] {where}{reason}", file=sys.stderr, flush=True)
            if multirun:
                return float("nan")
            raise SystemExit(getattr(exc, "exit_code", 1)) from None
        _say(f"dlcli: error: {where}{reason}")
        if isinstance(exc, Interrupted):
            interrupts.said()
        if not multirun and taken_empty(run_dir) and _only_hydra_files(run_dir):
            _remove_run_dir(run_dir)
        elif holds(run_dir):  # a folder is the run's (or the job's) own only if it holds it
            _record_failure(run_dir, status, reason)
        if isinstance(exc, Interrupted):  # the signal was meant for the whole command: no further jobs
            raise SystemExit(exc.exit_code) from None
        if multirun and _sweeper_takes_failures_as_exceptions(hydra):
            raise JobFailed(reason) from None
        if multirun:
            return float("nan")  # the basic sweeper would stop at the first exception
        raise SystemExit(getattr(exc, "exit_code", 1)) from None
    finally:
        leave()
        if multirun:
            release(run_dir)


def _quiet_log(rank_: int) -> None:
    """A process other than rank 0 writes no log file and prints only warnings, marked with its rank."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
        else:
            handler.setFormatter(logging.Formatter(f"[rank {rank_}] %(message)s"))
    root.setLevel(logging.WARNING)
    logging.getLogger("dlcli").setLevel(logging.WARNING)


def _say(line: str) -> None:
    """An error line on stderr, and in the run's log file (whose handler is file-only, so not twice)."""
    print(line, file=sys.stderr, flush=True)
    _to_log_file(line)


def _to_log_file(message: str, exc_info: BaseException | None = None) -> None:
    record = logging.LogRecord(
        "dlcli",
        logging.ERROR,
        __file__,
        0,
        message,
        None,
        (type(exc_info), exc_info, exc_info.__traceback__) if exc_info else None,
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def _record_failure(run_dir: Path, status: str, reason: str) -> None:
    """summary.json says how the run ended, unless it already says ok: a failed resume or a later
    command must not erase a finished run's result. Nor does a failure (a refused resume: another
    model.width, a bad value) replace an interruption's record, whose resume command still holds;
    only a later interruption or a divergence does."""
    summary = run_dir / "summary.json"
    try:
        before = json.loads(summary.read_text()).get("status")
        if before == "ok" or (before == "interrupted" and status == "failed"):
            return
    except (OSError, ValueError, AttributeError):
        pass  # none yet, or unreadable: nothing worth keeping
    try:
        write_json(summary, {"status": status, "reason": reason})
    except DlcliError:
        pass  # the disk that failed the run fails this too; the error line has been given


def kept_job(folder: Path, overrides: list[str]) -> str | None:
    """Why a sweep run again with trainer.resume=auto leaves a job's folder as it is: "finished" (its
    run ended ok), "other" (it holds the run of other overrides: the sweep is not the one that was
    started there). None: the job runs in it, new or resumed from its last checkpoint."""
    try:
        with open_regular(folder / ".hydra" / "overrides.yaml") as f:
            theirs = yaml.safe_load(f)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError):
        return "other"
    if not isinstance(theirs, list) or _but_resume(theirs) != _but_resume(overrides):
        return "other"
    try:
        with open_regular(folder / "summary.json") as f:
            finished = json.load(f).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        finished = False
    return "finished" if finished else None


def _but_resume(overrides: list) -> list:
    return [o for o in map(str, overrides) if not o.startswith("trainer.resume=")]


def job_files(*, _root_: Any) -> str | None:
    """hydra.output_subdir of dlcli train: .hydra, or None for a job whose folder kept_job keeps, so
    that Hydra writes none of its files there before the job starts (its callbacks come after)."""
    if (
        OmegaConf.select(_root_, "hydra.mode") != RunMode.MULTIRUN
        or OmegaConf.select(_root_, "hydra.job.name") != "train"
    ):
        return ".hydra"
    folder = OmegaConf.select(_root_, "hydra.runtime.output_dir", default=None, throw_on_missing=False)
    if not folder or OmegaConf.select(_root_, "trainer.resume", default=None) != "auto":
        return ".hydra"
    overrides = list(OmegaConf.select(_root_, "hydra.overrides.task", default=[]) or [])
    return None if kept_job(Path(folder), overrides) else ".hydra"


OmegaConf.register_new_resolver("dlcli_job_files", job_files, replace=True)


REFUSED = "refused_jobs.txt"  # in the sweep folder: the jobs keep_job refused, for the summary to count


def keep_job(cfg: Any) -> float | None:
    """For a job job_files kept: its finished run's result (best_val_acc, what the sweep compares),
    or NaN with one line for a folder holding another job's run; said on the console only, since
    Hydra's log file for the job is the one in that folder. None: the job is to run."""
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN or OmegaConf.select(cfg, "trainer.resume", default=None) != "auto":
        return None
    folder = Path(hydra.runtime.output_dir)
    task = list(hydra.overrides.task)
    why = kept_job(folder, task)
    if why is None:
        return None
    if why == "finished":
        with open_regular(folder / "summary.json") as f:
            result = float(json.load(f)["best_val_acc"])
        print(f"job {hydra.job.num} ({' '.join(_but_resume(task))}) finished before: {folder} is kept as it was")
        return result
    line = (
        f"job {hydra.job.num}: {folder} holds the run of other overrides; a sweep continued with "
        "trainer.resume=auto repeats the command that started it, with trainer.resume=auto added; left as it was"
    )
    print(f"dlcli: error: {line}", file=sys.stderr, flush=True)
    with open(Path(hydra.sweep.dir) / REFUSED, "a") as f:  # the sweep's summary counts them (SweepSummary)
        f.write(line + "\n")
    return float("nan")


class RunFolder(Callback):
    """Hydra callback: a run holds its folder (files.hold) before Hydra writes anything there.

    Two runs writing one folder overwrite each other's checkpoints, so a second run into a folder
    in use is refused, leaving that folder as it was; so is a new run or sweep into a folder that
    holds anything, unless the run continues the dlcli run there (trainer.resume, see _refusal).
    Commands that keep no files (hydra.output_subdir: null, as summary and gradcheck) hold no folder.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        folder = Path(os.path.abspath(str(config.hydra.run.dir)))
        resumes = "resume" in (OmegaConf.select(config, "trainer") or {})  # train; eval and predict do not
        continues = _continues(OmegaConf.select(config, "trainer.resume", default=None), folder)
        self._take(config, folder, "hydra.run.dir", resumes, continues)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        folder = Path(os.path.abspath(str(config.hydra.sweep.dir)))
        train = config.hydra.job.name == "train"  # the one command whose jobs a continued sweep keeps
        resumes = train and "resume" in (OmegaConf.select(config, "trainer") or {})
        continues = resumes and OmegaConf.select(config, "trainer.resume", default=None) == "auto"
        if continues and _sweeper_takes_failures_as_exceptions(config.hydra):
            print(
                "dlcli: error: trainer.resume=auto continues sweeps of the basic sweeper, not an Optuna study "
                "(whose trials it cannot store here); run the study again into a new hydra.sweep.dir",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(ConfigError.exit_code)
        self._take(config, folder, "hydra.sweep.dir", resumes, continues)

    @staticmethod
    def _take(config: Any, folder: Path, option: str, resumes: bool, continues: bool) -> None:

        if config.hydra.output_subdir is None:
            return

        def take() -> None:
            RunFolder._hold(folder, option, resumes, continues)

        if place() is None:
            take()
            return
        try:  # torchrun or SLURM: rank 0's folder, held by rank 0
            agree_on_folder(config, option, folder, take)
        except DlcliError as exc:  # the processes did not meet
            print(f"dlcli: error: {one_line(exc)}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None

    @staticmethod
    def _hold(folder: Path, option: str, resumes: bool, continues: bool) -> None:
        def refuse() -> None:
            reason = _refusal(folder, option, resumes, continues)
            if reason:
                raise ConfigError(reason)

        try:
            hold(folder, option, refuse)
        except DlcliError as exc:
            # Hydra turns a callback's exceptions into warnings and carries on: stop here instead
            print(f"dlcli: error: {one_line(exc)}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
        if continues:  # a killed run's half-written files: no other process writes here now
            remove_temporaries(folder, CHECKPOINTS)


def _refusal(folder: Path, option: str, resumes: bool, continues: bool) -> str | None:
    """Why a run (option hydra.run.dir) or a sweep (hydra.sweep.dir) may not write into `folder`, or None.

    A new run or sweep writes only into a folder that is new or empty (dlcli's lock file aside), so it
    never overwrites or mixes with files it did not make; a run may also continue the dlcli run in its
    folder (`continues`: trainer.resume=auto, or a checkpoint inside it). `resumes`: the command takes
    trainer.resume; a sweep may continue the sweep in its folder with trainer.resume=auto.
    """
    try:
        names = sorted(entry.name for entry in folder.iterdir() if entry.name != ".lock")
    except OSError as exc:  # writable but not listable: what it holds is unknown
        return f"{folder} cannot be listed ({exc.strerror}); write elsewhere with another {option} (or leave it out)"
    if not names:
        return None
    is_run = _holds_a_dlcli_run(folder)
    if continues and is_run and option == "hydra.run.dir":
        return None
    held = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    instead = f"write elsewhere with another {option} (or leave it out)"
    if option == "hydra.sweep.dir":
        # the basic sweeper's record, or an Optuna study's (which writes none), or dlcli's summary of either
        sweep = any((folder / name).is_file() for name in ("multirun.yaml", "optuna.db", "sweep.json"))
        if sweep and continues:  # trainer.resume=auto: each job's folder is kept, resumed or new (kept_job)
            return None
        resume = ", or continue that sweep with trainer.resume=auto" if sweep and resumes else ""
        return (
            f"{folder} already holds {'a sweep' if sweep else 'files'} ({held}), which a new sweep could "
            f"overwrite: a sweep writes only into a new or empty folder; {instead}{resume}"
        )
    if is_run:
        resume = ", or continue that run with trainer.resume=auto" if resumes else ""
        return (
            f"{folder} already holds a run ({held}), which a new one would overwrite: a new run writes only "
            f"into a new or empty folder; {instead}{resume}"
        )
    resume = "; trainer.resume continues only a folder where dlcli train ran" if continues else ""
    return (
        f"{folder} is not empty (it holds {held}), and a new run could overwrite those files: a new run "
        f"writes only into a new or empty folder; {instead}{resume}"
    )


def _holds_a_dlcli_run(folder: Path) -> bool:
    """Hydra's .hydra/ with a dlcli train config in it, or dlcli's checkpoints: another Hydra app's run
    folder has a .hydra/ too, and is no run for trainer.resume=auto to continue."""
    if checkpoint_dir(folder).is_dir():
        return (folder / ".hydra").is_dir()
    try:
        with open_regular(folder / ".hydra" / "config.yaml") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and {"model", "data", "trainer"} <= set(config)


def _continues(resume: str | None, folder: Path) -> bool:
    """Whether trainer.resume asks to continue the run in `folder` (from its own checkpoint), not another one."""
    if resume == "auto":
        return True
    return bool(resume) and folder.resolve() in Path(resume).expanduser().resolve().parents


class JobFailed(Exception):
    """A sweep job that failed, already reported; for sweepers that count raised jobs as failed trials."""


def _sweeper_takes_failures_as_exceptions(hydra) -> bool:
    # Optuna's sweeper marks a trial failed when its job raises, but crashes on a NaN result
    return "optuna" in str(hydra.sweeper.get("_target_", "")).lower()


def _only_hydra_files(run_dir: Path) -> bool:
    """A run folder Hydra wrote into for this job (it has .hydra/) holding nothing else but logs."""
    if not (run_dir / ".hydra").is_dir():
        return False
    return all(p.name in (".hydra", ".lock") or p.suffix == ".log" for p in run_dir.iterdir())


def _remove_run_dir(run_dir: Path) -> None:
    """What this run put into a folder it found new or empty; the folder, and the parents (the date
    folder, outputs/ ...), only if this process made them."""
    logging.shutdown()  # close Hydra's log file before deleting it
    undo(run_dir)
