"""Files found in folders a user gave (image-folder classes, dlcli predict's inputs), and opening them.

A folder is someone else's layout, so the walk trusts none of it. Each real folder is entered
once, by (device, inode): a link back up (`up -> ..`) is no loop. A link whose target lies inside
the scanned root, or holds it, is not followed at all: what it leads to counts where it really is
(or would be the whole disk). One leading elsewhere is followed, once. Each real file counts once,
under the first name the sorted walk meets. Only regular files are taken: a FIFO or a device named
like an image would block or never end a read, so nothing else is ever opened. What was left out
is said in one line.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from dlcli.errors import DataError
from dlcli.files import kind

log = logging.getLogger("dlcli")

INSIDE = "link back into the folder or above it, whose images count where they are"
TWICE = "same file as another one found (a hard link, or a link from outside)"
LOOP = "folder already scanned under another name"


@dataclass
class Skipped:
    """What a scan left out, by reason."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, path: Path, root: Path) -> None:
        self.reasons.setdefault(reason, []).append(_shown(path, root))

    def report(self, where: str) -> None:
        if not self.reasons:
            return
        n = sum(len(names) for names in self.reasons.values())
        parts = [
            f"{reason} ({len(names)}): {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
            for reason, names in self.reasons.items()
        ]
        log.warning(f"{where}: skipped {n} entr{'y' if n == 1 else 'ies'}: {'; '.join(parts)}")


class Scan:
    """One walk over a root (a whole image folder, with its train/ and test/): the folders and files
    seen so far, so that none is counted twice even across class folders."""

    def __init__(self, root: Path, extensions: tuple[str, ...]) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.extensions = extensions
        self.folders: set[tuple[int, int]] = set()
        self.files: set[tuple[int, int]] = set()
        self.skipped = Skipped()

    def leads_inside(self, path: Path) -> bool:
        """Whether `path` is a link whose target lies inside the root (the root itself included), or
        holds the root (`up -> ../..`, `-> /`): following that would walk the root again and all
        around it."""
        if not path.is_symlink():
            return False
        real = os.path.realpath(path)
        return _within(real, self.real_root) or _within(self.real_root, real)

    def files_under(self, folder: Path) -> list[Path]:
        """The files under `folder` (nested folders too) with one of the extensions, in sorted order;
        hidden files and folders are left out."""
        found: list[Path] = []
        try:
            self._walk(folder, found)
        except RecursionError:  # folders nested deeper than Python's stack: no image set is laid out so
            raise DataError(
                f"{folder} holds folders nested more than {sys.getrecursionlimit() // 2} deep; dlcli reads class "
                "folders with their images at most a few levels below; point it at a shallower folder"
            ) from None
        return found

    def _walk(self, folder: Path, found: list[Path]) -> None:
        try:
            info = os.stat(folder)
        except OSError as exc:
            self.skipped.add(f"unreadable folder ({exc.strerror})", folder, self.root)
            return
        key = (info.st_dev, info.st_ino)
        if key in self.folders:
            self.skipped.add(LOOP, folder, self.root)
            return
        self.folders.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            self.skipped.add(f"unreadable folder ({exc.strerror})", folder, self.root)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            wanted = os.path.splitext(entry.name)[1].lower() in self.extensions
            if entry.is_symlink() and self.leads_inside(path):
                if wanted or entry.is_dir():
                    self.skipped.add(INSIDE, path, self.root)
                continue
            try:
                info = entry.stat()  # through a link: what it leads to
            except OSError:
                if wanted or entry.is_symlink():
                    self.skipped.add("broken link or unreadable entry", path, self.root)
                continue
            if stat.S_ISDIR(info.st_mode):
                self._walk(path, found)
            elif not wanted:
                continue
            elif not stat.S_ISREG(info.st_mode):
                self.skipped.add(f"{kind(info.st_mode)}, not a regular file", path, self.root)
            elif (info.st_dev, info.st_ino) in self.files:
                self.skipped.add(TWICE, path, self.root)
            else:
                self.files.add((info.st_dev, info.st_ino))
                found.append(path)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
