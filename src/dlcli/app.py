"""What every dlcli command shares: error reporting, device choice, thread settings, versions."""

import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig

from dlcli.errors import ConfigError, DlcliError


def run_guarded(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a Hydra task; a user error becomes one line on stderr and a non-zero exit.

    Hydra makes the run directory before the task starts; if the task fails before writing
    anything into it, the directory goes too, so a typo leaves no clutter behind.
    Set DLCLI_DEBUG=1 to see the traceback instead.
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = _only_hydra_files(run_dir)
    try:
        return task(cfg)
    except DlcliError as exc:
        if fresh and _only_hydra_files(run_dir):
            _remove_run_dir(run_dir)
        if os.environ.get("DLCLI_DEBUG"):
            raise
        print(f"dlcli: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("dlcli: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _only_hydra_files(run_dir: Path) -> bool:
    return all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()) if run_dir.is_dir() else False


def _remove_run_dir(run_dir: Path) -> None:
    import logging

    logging.shutdown()  # close Hydra's log file before deleting it
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in run_dir.resolve().parents:  # the date folder, outputs/ ... if now empty
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name} is invalid: no CUDA GPU is visible here; "
                              "use trainer.device=cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name} is invalid: only {torch.cuda.device_count()} GPU(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    return torch.device(name)


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def process_age() -> float | None:
    """Seconds since this process started (Linux), so start-up cost includes imports."""
    import time

    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        return time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM is per address space, so unlike ru_maxrss it does
    not count a parent's memory shared with us between fork and exec."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def versions() -> dict:
    import torch

    from dlcli import __version__

    return {"dlcli": __version__, "torch": torch.__version__, "python": platform.python_version()}
