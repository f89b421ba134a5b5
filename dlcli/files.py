"""Run files written atomically: a temporary file beside the target, flushed, then renamed.

A kill at any instant leaves either the old file or the new one, never a torn one.
"""

import csv
import fcntl
import io
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Callable

from dlcli.errors import DlcliError


class OutputError(DlcliError):
    """A run file could not be written (disk full, no permission)."""


class FolderInUse(DlcliError):
    """Another process holds the run folder."""


METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_seconds", "samples_per_second")


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write through a temporary file and rename; a full disk leaves the old file and one clear error."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb" if binary else "w", newline=None if binary else "") as f:
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600 would hide results from other users
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise OutputError(f"could not write {path} ({reason}); the previous version, if any, is intact; "
                              "free some disk space or write elsewhere with hydra.run.dir=...") from None
        raise


@cache
def umask() -> int:
    """The process's umask, read without changing it: os.umask can only read by setting, which
    would briefly give files made meanwhile by other threads the wrong mode."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):  # not Linux, or a kernel before 4.7
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"))


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.jsonl and metrics.csv, one row per epoch, rewritten whole each epoch."""
    write_atomic(run_dir / "metrics.jsonl", lambda f: f.write("".join(json.dumps(r) + "\n" for r in rows)))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(run_dir / "metrics.csv", lambda f: f.write(buffer.getvalue()))


_held: dict[Path, int] = {}  # folder -> the open lock file; the lock lasts while it stays open


def hold(folder: Path, option: str = "hydra.run.dir", check: Callable[[], None] = lambda: None) -> None:
    """Lock `folder` for this process, making it if needed, then run `check`, which may refuse the
    folder by raising: the folder is then left exactly as it was.

    An flock on <folder>/.lock, which the OS drops when the process ends, even by SIGKILL: no stale
    lock is ever left to clear by hand. The file stays; it holds the pid of its last holder.
    """
    folder = Path(folder).resolve()
    if folder in _held:
        return
    lock = folder / ".lock"
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            created = not lock.exists()
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"{exc.strerror}: {exc.filename} (choose a writable folder, e.g. {option}=...)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 20, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(f"{folder} is in use by another dlcli run (pid {pid}); wait for it to end or stop "
                              f"it, or write elsewhere with another {option}") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file that a refused run unlinked meanwhile: lock the one there now
    try:
        check()
    except BaseException:
        if created:
            lock.unlink(missing_ok=True)
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[folder] = fd


def holds(folder: Path) -> bool:
    return Path(folder).resolve() in _held


def release(folder: Path) -> None:
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)
