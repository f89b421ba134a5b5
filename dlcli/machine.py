"""The machine a command runs on: the device, CPU threads, memory, versions, optional packages, and
what a `_target_` names.

It imports nothing of dlcli but its errors, so every module, however low, may use it.
"""

import importlib
import os
import platform
import random
import resource
import sys
from typing import Any

from dlcli import __version__
from dlcli.errors import ConfigError, first_line


def optional_package(module: str, extra: str, purpose: str, instead: str = "") -> Any:
    """Import a package of an optional extra, or say in one line which extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{purpose} needs the {module} package, which is not installed: install dlcli's {extra} "
            f'extra, pip install "dlcli[{extra}]" (in a clone of dlcli: pip install -e ".[{extra}]")'
            + (f"; or {instead}" if instead else "")
        ) from None


def import_target(target: str, key: str, advice: str) -> Any:
    """What a dotted `_target_` names, imported, never called: the longest importable module along the
    path, then attributes. The folder dlcli runs from is on the path (its one place), so a user's
    module there is found from the `dlcli` script too, not only from `python -m dlcli`. One line
    (`key`, the cause, `advice`) if it cannot be found."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    parts = str(target).split(".")
    try:
        for i in range(len(parts), 0, -1):
            module = ".".join(parts[:i])
            try:
                found = importlib.import_module(module)
                break
            except ModuleNotFoundError as exc:
                if i == 1 or not (exc.name and module.startswith(exc.name)):
                    raise  # a module that exists but imports one that does not: that is the news
        for attribute in parts[i:]:
            found = getattr(found, attribute)
    except Exception as exc:
        raise ConfigError(
            f"{key}={target} cannot be imported ({type(exc).__name__}: {first_line(exc)}); {advice}"
        ) from None
    return found


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={name} is invalid: no CUDA GPU is visible here; use trainer.device=cpu or auto"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={name} is invalid: only {torch.cuda.device_count()} GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    return torch.device(name)


def seed_all(seed: int) -> None:
    """Python's, NumPy's and torch's generators from trainer.seed, as every command that builds a model seeds them."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int, processes: int = 1) -> int:
    """torch's CPU threads: as configured, else the cores shared out among parallel sweep jobs and
    the processes of a multi-process run on this machine (two jobs with two threads each on two
    cores spin on each other and run many times slower)."""
    import torch

    threads = threads or max(1, (os.cpu_count() or 1) // (parallel_jobs() * processes))
    torch.set_num_threads(threads)
    return threads


def parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs at once on this machine (joblib's n_jobs), else 1."""
    from hydra.core.hydra_config import HydraConfig

    try:
        launcher = HydraConfig.get().launcher
    except ValueError:  # not inside a Hydra run
        return 1
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = launcher.get("n_jobs") or 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # joblib: -1 = all cores


def process_age() -> float | None:
    """Seconds since this process started (Linux), so start-up cost includes imports.

    Both numbers count from boot in 10 ms ticks; /proc/stat's btime would add up to a second of
    error, being rounded to whole seconds.
    """
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return round(age, 2) if age >= 0 else None  # negative: the two clocks disagree (some containers)


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory() -> int:
    """Bytes of RAM the kernel could give without swapping (Linux's MemAvailable), else the free pages."""
    try:
        with open("/proc/meminfo") as f:
            line = next(line for line in f if line.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def rss_anon(pid: int | str = "self") -> int | None:
    """A process's anonymous resident memory in bytes (Linux's RssAnon): its own memory, not the
    page cache of the files it maps. None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(line for line in f if line.startswith("RssAnon:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def peak_rss_anon(proc: Any, every: float = 0.01) -> int:
    """The highest RssAnon (bytes) of a running subprocess.Popen, sampled every `every` seconds until
    it exits (the kernel keeps no peak of it): for the bench and the tests."""
    import time

    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_anon(proc.pid) or 0)
        time.sleep(every)
    return peak


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM is per address space, so unlike ru_maxrss it does
    not count a parent's memory shared with us between fork and exec."""
    try:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def versions() -> dict:
    import torch

    return {"dlcli": __version__, "torch": torch.__version__, "python": platform.python_version()}
