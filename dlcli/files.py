"""Run files written atomically: a temporary file beside the target, flushed, then renamed.

A kill at any instant leaves either the old file or the new one, never a torn one.
"""

import csv
import fcntl
import io
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO, Callable

from dlcli.errors import DataError, DlcliError


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
            raise OutputError(
                f"could not write {path} ({reason}); the previous version, if any, is intact; "
                "free some disk space or write elsewhere with hydra.run.dir=..."
            ) from None
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


@dataclass
class _Hold:
    fd: int  # the open lock file; the lock lasts while it stays open
    made: Path | None  # the topmost folder hold() made (the folder or a parent); None: the folder was there
    empty: bool  # the folder held nothing (a lock file aside) when taken: what is in it now is this process's
    lock_made: bool


_held: dict[Path, _Hold] = {}


def hold(folder: Path, option: str = "hydra.run.dir", check: Callable[[], None] = lambda: None) -> None:
    """Lock `folder` for this process, making it if needed, then run `check`, which may refuse the
    folder by raising: a folder that was there is then left exactly as it was, one made here is removed.

    An flock on <folder>/.lock, which the OS drops when the process ends, even by SIGKILL: no stale
    lock is ever left to clear by hand. The file stays; it holds the pid of its last holder.
    Whether the folder was there before is kept with the hold: only what this process made may go
    (see undo).
    """
    folder = Path(folder).resolve()
    if folder in _held:
        return
    lock = folder / ".lock"
    made = None
    while True:
        try:
            made = made or _make(folder)
            lock_made = not lock.exists()
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            _unmake(folder, made)
            raise OutputError(f"{exc.strerror}: {exc.filename} (choose a writable folder, e.g. {option}=...)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 20, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if lock_made:
                lock.unlink(missing_ok=True)
            _unmake(folder, made)
            raise FolderInUse(
                f"{folder} is in use by another dlcli run (pid {pid}); wait for it to end or stop "
                f"it, or write elsewhere with another {option}"
            ) from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file that a refused run unlinked meanwhile: lock the one there now
    try:
        check()
    except BaseException:
        if lock_made:
            lock.unlink(missing_ok=True)
        os.close(fd)
        _unmake(folder, made)
        raise
    empty = made is not None or not any(p.name != ".lock" for p in folder.iterdir())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[folder] = _Hold(fd, made, empty, lock_made)


def _make(folder: Path) -> Path | None:
    """Make `folder` and its missing parents, one at a time so that a folder another process made
    meanwhile is not taken for this one's; returns the topmost one made here."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    made = None
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # another process's, or a file: opening the lock says which
        made = made or path
    return made


def _unmake(folder: Path, made: Path | None) -> None:
    """Remove the folders hold() made, from `folder` up to `made`, as long as they are empty."""
    if made is None:
        return
    for path in (folder, *folder.parents):
        try:
            path.rmdir()
        except OSError:  # something was put there meanwhile: it is not ours alone any more
            return
        if path == made:
            return


def holds(folder: Path) -> bool:
    return Path(folder).resolve() in _held


def taken_empty(folder: Path) -> bool:
    """Whether this process holds `folder` and found it new or empty: all that is in it is its own."""
    held = _held.get(Path(folder).resolve())
    return held is not None and held.empty


def undo(folder: Path) -> None:
    """Take back a folder this process found new or empty: remove what it put there and release it;
    the folder itself, and its parents, go only if this process made them."""
    folder = Path(folder).resolve()
    held = _held.pop(folder, None)
    if held is None or not held.empty:
        if held is not None:
            _held[folder] = held
        return
    try:
        for entry in folder.iterdir():
            if entry.name == ".lock" and not held.lock_made:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    except OSError:
        pass  # what could not go stays; the failure's line has been given
    os.close(held.fd)
    _unmake(folder, held.made)


def release(folder: Path) -> None:
    held = _held.pop(Path(folder).resolve(), None)
    if held is not None:
        os.close(held.fd)


def release_all() -> None:
    """Drop every folder this process holds, as its exit would: for a caller that runs dlcli
    commands one after another in one process."""
    for folder in list(_held):
        release(folder)


# write_atomic's temporaries: .NAME. + mkstemp's 8 random characters + .tmp
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_temporaries(folder: Path, *inside: str) -> None:
    """Delete the temporary files of writes that a kill cut short (write_atomic's .NAME.*.tmp) in a
    folder this process holds, where no other process writes, and in its sub-folders `inside`."""
    if not holds(folder):
        return
    for where in (Path(folder), *(Path(folder) / name for name in inside)):
        try:
            entries = list(os.scandir(where))
        except OSError:  # no such sub-folder yet
            continue
        for entry in entries:
            if _TEMPORARY.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)


# --- reading users' files: only regular ones, since opening a FIFO waits for a writer forever --


def kind(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return "special file"


def check_regular(path: Path, key: str, expected: str) -> None:
    """One line if `path` exists but is not a regular file (a FIFO, a device): reading one could block
    forever, so it is refused without being opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing: the caller's own message says so
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise DataError(
            f"{key}={path} is a {kind(mode)}, not a regular file: dlcli reads only regular files; pass {expected}"
        )


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file; else OSError, without waiting on it.

    O_NONBLOCK makes opening a FIFO return at once (a plain open waits for a writer), and the check
    is made on the opened file, so a file swapped for a FIFO after the scan is caught too."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"a {kind(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
