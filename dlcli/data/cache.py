"""The cache of decoded images (and of feature tables on the disk path): one set of files per
dataset split, memory-mapped when read.

    <name>.npy          the images, uint8 [N, C, H, W] (a table's rows: float32 [N, F]), in NumPy's
                        format (any NumPy tool reads it)
    <name>.labels.npy   the labels, int64 [N]
    <name>.json         what they were made from (the sources' fingerprint), and the two files' size
                        and mtime; written last, so a cache without it is not complete

The images are written straight into the file (never the whole set in memory), into a
`.partial` file renamed once complete. A later run whose sources are unchanged maps the file
instead of decoding again: its pages come from the kernel's page cache, shared by every process
that maps it and reclaimable, rather than from the process's own memory. A cache that is stale,
truncated, altered since it was written or of another format is rebuilt. One process builds a
cache at a time (a lock beside it); the others wait and map what it wrote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dlcli.errors import DataError
from dlcli.files import OutputError, write_atomic

if TYPE_CHECKING:
    import torch

FORMAT = 2  # 1: one torch.save'd .pt file, read whole


def cache_file(root: Path, filename: str) -> Path:
    """Beside the data if that folder is writable, else in the user's cache folder."""
    if os.environ.get("DLCLI_CACHE"):
        return Path(os.environ["DLCLI_CACHE"]) / filename
    folder = root if root.exists() else root.parent
    # the mode bits too: root may write anywhere, but a read-only data folder means "leave it be"
    if os.access(folder, os.W_OK) and folder.stat().st_mode & stat.S_IWUSR:
        return root / "dlcli-cache" / filename
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dlcli"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return base / digest / filename


def _paths(stem: Path) -> tuple[Path, Path, Path]:
    return (
        stem.with_name(stem.name + ".npy"),
        stem.with_name(stem.name + ".labels.npy"),
        stem.with_name(stem.name + ".json"),
    )


def open_cache(stem: Path, fingerprint: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, labels) of a complete cache made from `fingerprint`, the images memory-mapped; else None."""
    import numpy as np
    import torch

    images, labels, meta = _paths(stem)
    try:
        record = json.loads(meta.read_text())
        if record.get("format") != FORMAT or record.get("sources") != fingerprint:
            return None
        for path, (size, mtime) in ((images, record["images"]), (labels, record["labels"])):
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) != (size, mtime):  # truncated or altered since it was written
                return None
        # copy-on-write: a mapping torch may treat as writable, whose pages stay the shared page cache
        x = np.load(images, mmap_mode="c")
        y = np.load(labels)
    except Exception:  # absent, stale format or damaged: rebuild it from the sources
        return None
    if x.dtype.str != record.get("dtype", "|u1") or y.shape != (len(x),) or list(x.shape) != record.get("shape"):
        return None
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64, copy=False))


@contextlib.contextmanager
def building(stem: Path):
    """Hold the cache's lock while it is checked and built: a second process of the run waits here,
    then finds the cache complete. A build that fails (an unreadable image, say) leaves nothing:
    the lock file, and the cache folder, go again if this call made them; a process that was
    waiting for that lock file takes the one there now. Where the lock file cannot be made, the
    caller builds without it (build_cache then finds the folder unwritable)."""
    lock = stem.with_name(stem.name + ".lock")
    made = [p for p in reversed(lock.parents[: len(lock.parents) - 1]) if not p.exists()]
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            lock_made = not lock.exists()
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file a failed build removed meanwhile: lock the one there now
    try:
        yield
    except BaseException:
        if lock_made:
            lock.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: another cache may have landed there meanwhile
        raise
    finally:
        os.close(fd)


def build_cache(
    stem: Path,
    fingerprint: list,
    shape: tuple[int, ...],
    labels: torch.Tensor,
    fill: Callable[[Path], None],
    check: Callable[[], None] = lambda: None,
    dtype: str = "uint8",
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Write the images of `shape` by `fill(partial_path)` (which opens the .npy there and writes its
    rows), then the labels and the record, and map the result. `check()` runs after `fill`, before
    the cache is complete: it raises if the sources changed meanwhile. Returns None when the cache
    folder cannot be written: the caller decodes into memory instead (a cache only saves time)."""
    import numpy as np

    images, labels_path, meta = _paths(stem)
    # a file of this build's own: a killed build's workers may still be writing into theirs
    partial = images.with_name(f"{images.name}.{os.getpid()}.partial")
    try:
        images.parent.mkdir(parents=True, exist_ok=True)
        meta.unlink(missing_ok=True)  # the old cache is no longer complete from here on, and its room is needed
        for old in (images, labels_path, *images.parent.glob(f"{glob.escape(images.name)}.*.partial")):
            old.unlink(missing_ok=True)  # under the lock: every partial file here is a killed build's
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(dtype), shape=shape)
        offset, n_bytes, kind = out.offset, out.nbytes, out.dtype.str
        del out
        _reserve(partial, offset + n_bytes)
    except DataError:
        partial.unlink(missing_ok=True)
        raise
    except OSError:
        partial.unlink(missing_ok=True)
        return None
    try:
        fill(partial)
        check()
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, images)
        buffer = io.BytesIO()
        np.save(buffer, labels.numpy().astype(np.int64))
        write_atomic(labels_path, lambda f: f.write(buffer.getvalue()), binary=True)
        record = {
            "format": FORMAT,
            "shape": list(shape),
            "dtype": kind,
            "images": _stamp(images),
            "labels": _stamp(labels_path),
            "sources": fingerprint,
        }
        write_atomic(meta, lambda f: f.write(json.dumps(record)))
    except OutputError as exc:  # room for the images, then none for the rest: decoding into memory would not fit either
        for path in (images, labels_path):
            path.unlink(missing_ok=True)
        raise DataError(
            f"the image cache {images} could not be written ({exc}); free some space, or put the cache on "
            "another disk with DLCLI_CACHE=DIR"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return open_cache(stem, fingerprint)


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _reserve(path: Path, size: int) -> None:
    """Allocate the file's blocks now: writing into a mapped file the disk has no room for would kill
    the process with SIGBUS, not raise."""
    if not hasattr(os, "posix_fallocate"):  # macOS: the writes themselves find out
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate: writes decide
                return
            raise
        free = os.statvfs(path.parent)
        raise DataError(
            f"no room for the image cache {path.name} in {path.parent}: it needs {size_text(size)}, the disk "
            f"has {size_text(free.f_bavail * free.f_frsize)} free; free some space, or put the cache on "
            "another disk with DLCLI_CACHE=DIR"
        ) from None
    finally:
        os.close(fd)


def size_text(n_bytes: float) -> str:
    """Bytes as a reader wants them: 150 MiB, 2.3 GiB."""
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"
