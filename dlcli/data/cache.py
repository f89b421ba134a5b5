"""The uint8 cache of decoded images: one file per dataset split, with the fingerprint of its sources.

A later run whose sources are unchanged reads it back instead of decoding again; a file that is
stale, damaged or of another format is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from dlcli.files import OutputError, write_atomic

if TYPE_CHECKING:
    import torch


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


def read_cache(path: Path, fingerprint: list[list[int]]):
    import torch

    try:
        blob = torch.load(path, weights_only=True)
        if blob["sources"] == fingerprint:
            return blob["x"], blob["y"]
    except Exception:  # absent, stale format or damaged: rebuild it from the sources
        pass
    return None


def write_cache(path: Path, x: torch.Tensor, y: torch.Tensor, fingerprint: list[list[int]]) -> None:
    import torch

    try:
        write_atomic(path, lambda f: torch.save({"x": x, "y": y, "sources": fingerprint}, f), binary=True)
    except OutputError:
        pass  # a cache we cannot write only costs time on the next run
