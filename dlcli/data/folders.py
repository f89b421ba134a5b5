"""Users' own images in torchvision's ImageFolder layout, decoded once into a uint8 cache.

    root/cat/1.png, root/dog/2.jpg, ...        a seeded stratified test fraction is held out
    root/train/cat/1.png, root/test/cat/9.png  the given split (train/ alone: a test fraction of it)

One sub-folder per class (nested folders inside a class count too), classes in sorted order as
ImageFolder numbers them; hidden files and folders are skipped. Images of any size and mode are
converted to `channels` and resized to `image_size`, both inferred from the first image when not
given. The cache sits beside the image folder (in its parent's dlcli-cache/, see
cache.cache_file), not inside it, where ImageFolder would take it for a class.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from dlcli.data.cache import build_cache, building, cache_file, open_cache, size_text
from dlcli.data.loaded import Loaded
from dlcli.data.scan import INSIDE, Scan
from dlcli.data.tables import check_fraction, held_out_rows
from dlcli.errors import ConfigError, DataError, one_line
from dlcli.files import open_regular
from dlcli.machine import cores
from dlcli.settings import ImageFolderSettings

# torchvision.datasets.folder.IMG_EXTENSIONS, written out so that a cache hit never imports torchvision
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# PIL modes of one channel ("I" and "F" hold 32-bit values, "I;16*" 16-bit ones)
GRAY_MODES = ("1", "L", "LA", "La", "I", "F")
_LAYOUT = "one sub-folder per class (root/cat/1.png), or train/ and test/ sub-folders each laid out so"


def load_image_folder(
    root: str | Path,
    channels: int | None = None,
    image_size: int | Sequence[int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_pixels: int = ImageFolderSettings.max_pixels,
    workers: int = 0,
) -> Loaded:
    """Images as uint8 [N, C, H, W] (C = `channels`, H×W = `image_size`), labels by class folder,
    mean/std per channel in [0, 1] units from the training split. The images are the memory-mapped
    cache, the splits rows of it; `workers` processes decode them into it (0: one per core)."""
    check_fraction(test_fraction)
    size = _check_options(channels, image_size)
    root = Path(root).expanduser()
    train_dir, test_dir = _layout(root)
    scan = Scan(root, IMAGE_EXTENSIONS)  # one for both splits: no image is both a training and a test image
    classes, files, labels = _scan(train_dir, scan)
    n_train = len(files)
    if test_dir is not None:
        test_classes, test_files, test_labels = _scan(test_dir, scan, min_classes=1)  # the class check says more
        _same_classes(classes, test_classes, train_dir, test_dir)
        files, labels = files + test_files, labels + test_labels
    scan.skipped.report(f"data.root={root}")

    fingerprint, stats = _fingerprint(root, files, classes, n_train, channels, size)
    stem = cache_file(root.resolve().parent, _cache_name(root, channels, size))
    y = torch.tensor(labels)
    with building(stem):
        stored = open_cache(stem, fingerprint)
        if stored is None:
            channels, size = _infer(files, channels, size, max_pixels, "data.max_pixels")
            stored = build_cache(
                stem,
                fingerprint,
                (len(files), channels, *size),
                y,
                lambda path: decode_into(path, files, channels, size, max_pixels, "data.max_pixels", workers, root),
                check=lambda: _unchanged(root, files, stats),
            )
        if stored is None:  # no cache can be written here: decode into memory, as the cache only saves time
            stored = decode_all(files, channels, size, max_pixels, "data.max_pixels"), y
    x, y = stored
    if test_dir is None:
        train_rows, test_rows = held_out_rows(y, test_fraction, seed, str(train_dir))
    else:
        train_rows, test_rows = torch.arange(n_train), torch.arange(n_train, len(y))
    return Loaded(
        x,
        y[train_rows],
        x,
        y[test_rows],
        classes,
        *channel_stats(x, train_rows),
        train_rows=train_rows,
        test_rows=test_rows,
    )


def channel_stats(x: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population) of uint8 images [N, C, H, W] (or of those `rows` of
    them), in [0, 1] units.

    From a 256-bin histogram per channel, a chunk of images at a time: exact, and it needs neither a
    float copy of the images nor more than a chunk of them in memory.
    """
    n = len(x) if rows is None else len(rows)
    step = max(1, STATS_BYTES // max(1, x[:1].numel()))
    counts = torch.zeros(x.shape[1], 256, dtype=torch.int64)
    for start in range(0, n, step):
        chunk = x[start : start + step] if rows is None else x.index_select(0, rows[start : start + step])
        for c in range(x.shape[1]):
            counts[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(x.shape[1]):
        total = counts[c].double()
        m = (total * values).sum() / total.sum()
        s = ((total * (values - m) ** 2).sum() / total.sum()).sqrt()
        mean.append(m.item() / 255)
        std.append(s.item() / 255 if s > 0 else 1.0)  # a constant channel: leave its scale alone
    return mean, std


STATS_BYTES = 16 * 2**20  # of images per histogram update


def _check_options(channels, image_size) -> tuple[int, int] | None:
    """The image size as (H, W), or None to infer it; channels must be 1, 3 or None."""
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ConfigError(
            f"data.channels={channels!r} is invalid: 1 (grayscale), 3 (RGB), or null to take the first image's"
        )
    if image_size is None:
        return None
    size = [image_size, image_size] if isinstance(image_size, int) else image_size
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 4096 for s in size)
    ):
        raise ConfigError(
            f"data.image_size={image_size!r} is invalid: pixels per side in [1, 4096] (an int for "
            "square images, or [height, width]), or null to take the first image's size"
        )
    return int(size[0]), int(size[1])


# --- finding the files --------------------------------------------------------------------


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(folder of training classes, folder of test classes or None)."""
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"image folder {root} {what}: expected a folder with {_LAYOUT}; point data.root at it")
    train, test = root / "train", root / "test"
    if train.is_dir():
        return train, test if test.is_dir() else None
    if test.is_dir():
        raise DataError(
            f"{root} has test/ but no train/: put the training images in {train}, one sub-folder per "
            "class, or move the class folders out of test/ to hold out a test fraction instead"
        )
    return root, None


def _scan(folder: Path, scan: Scan, min_classes: int = 2) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """(class names, image files, their class indices) of a folder of class folders, in sorted order."""
    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and _visible(entry.name))
    classes = []
    for name in names:
        if scan.leads_inside(folder / name):  # a second name for a folder already there: its images would count twice
            scan.skipped.add(INSIDE, folder / name, scan.root)
        else:
            classes.append(name)
    classes = tuple(classes)
    if not classes:
        images = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        found = f"its {len(images)} image(s) lie directly in it" if images else "it is empty"
        raise DataError(
            f"{folder} has no class folders ({found}): expected {_LAYOUT}; move each class's images "
            "into a sub-folder named after the class"
        )
    if len(classes) < min_classes:
        raise DataError(
            f"{folder} has one class folder only ({classes[0]}): a classifier needs at least two; expected {_LAYOUT}"
        )
    files, labels = [], []
    for index, name in enumerate(classes):
        images = _images_in(folder / name, scan)
        files += images
        labels += [index] * len(images)
    return classes, files, labels


def _images_in(folder: Path, scan: Scan) -> list[Path]:
    """The image files under one class folder, nested ones included (as ImageFolder walks it), sorted;
    each real file once, and only regular files (see dlcli.data.scan)."""
    found = scan.files_under(folder)
    if not found:
        raise DataError(
            f"class folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)}): add some, or remove the folder"
        )
    return sorted(found)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _same_classes(train: tuple[str, ...], test: tuple[str, ...], train_dir: Path, test_dir: Path) -> None:
    missing, extra = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if missing or extra:
        parts = [
            f"test/ lacks {', '.join(missing)}" if missing else "",
            f"test/ has {', '.join(extra)}, which train/ lacks" if extra else "",
        ]
        raise DataError(
            f"the class folders of {train_dir} and {test_dir} differ: {'; '.join(p for p in parts if p)}; "
            "give both the same class folders (test/ needs at least one image per class)"
        )


# --- the cache ----------------------------------------------------------------------------


def _cache_name(root: Path, channels: int | None, size: tuple[int, int] | None) -> str:
    """One cache per folder and requested shape; `None`s (infer) are part of the key, so a hit needs
    no image opened."""
    key = json.dumps([str(root.resolve()), channels, size])
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", root.resolve().name) or "root"
    return f"folder-{stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _fingerprint(
    root: Path,
    files: list[Path],
    classes: tuple[str, ...],
    n_train: int,
    channels: int | None,
    size: tuple[int, int] | None,
) -> tuple[list, np.ndarray]:
    """What the cache was made from, as a digest of the options, classes, split and every file's path,
    size and mtime (a list per file would cost more memory than a small image); and the files' sizes
    and mtimes [N, 2], to find one that changes while the cache is built."""
    head = ["image_folder", 2, channels or 0, list(size or ()), list(classes), n_train]
    digest = hashlib.sha256(json.dumps(head).encode())
    stats = np.empty((len(files), 2), dtype=np.int64)
    for i, path in enumerate(files):
        st = os.stat(path)
        stats[i] = st.st_size, st.st_mtime_ns
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
    digest.update(stats.tobytes())
    return ["image_folder", 2, digest.hexdigest()], stats


# --- decoding -----------------------------------------------------------------------------


def decode_all(
    files: list[Path], channels: int | None, size: tuple[int, int] | None, max_pixels: int, key: str
) -> torch.Tensor:
    """All images as one uint8 tensor [N, C, H, W] in memory (dlcli predict's inputs, or a cache that
    cannot be written); unset channels and size come from the first image. An image of more than
    `max_pixels` pixels (says its header) is refused before it is decoded."""
    channels, size = _infer(files, channels, size, max_pixels, key)
    x = torch.empty((len(files), channels, *size), dtype=torch.uint8)
    # PIL and torch release the GIL while decoding and resizing: threads use every core
    pool = ThreadPoolExecutor()
    try:
        for i, image in enumerate(pool.map(lambda p: _decode_file(p, channels, size, max_pixels, key), files)):
            x[i] = image
    except BaseException:
        # the first bad file (or Ctrl-C) ends the run without decoding the rest, and without waiting
        # for a decode under way
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return x


def _infer(
    files: list[Path], channels: int | None, size: tuple[int, int] | None, max_pixels: int, key: str
) -> tuple[int, tuple[int, int]]:
    """The channels and size asked for, the first image's where not."""
    if channels is None or size is None:
        mode, first_size = _inspect(files[0], max_pixels, key)
        channels = channels or (1 if mode in GRAY_MODES or mode.startswith("I;16") else 3)
        size = size or first_size
    return channels, size


DECODE_CHUNK = 64  # images per task handed to a decoding process


def decode_into(
    path: Path,
    files: list[Path],
    channels: int,
    size: tuple[int, int],
    max_pixels: int,
    key: str,
    workers: int = 0,
    label: Path | str = "",
) -> None:
    """Decode `files` into the .npy at `path` (made for them), in `workers` processes (0: one per
    core), each writing its images straight into the file; a progress bar on a terminal."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from torchvision.transforms.v2 import functional  # noqa: F401  imported once, before the processes fork
    from tqdm import tqdm

    chunks = [(start, files[start : start + DECODE_CHUNK]) for start in range(0, len(files), DECODE_CHUNK)]
    workers = min(workers or cores(), len(chunks))
    setup = (path, channels, size, max_pixels, key)
    bar = tqdm(total=len(files), unit="img", desc=f"decoding {label}", disable=not sys.stderr.isatty(), leave=False)
    with bar:
        if workers <= 1:
            _start_decoder(*setup, in_process=True)
            try:
                for chunk in chunks:
                    bar.update(_decode_chunk(chunk))
            finally:
                _stop_decoder()
            return
        # fork, as torch's DataLoader does on Linux: the decoding needs nothing imported again
        fork = "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux"
        context = multiprocessing.get_context("fork" if fork else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_decoder, initargs=setup)
        try:
            for done in as_completed([pool.submit(_decode_chunk, chunk) for chunk in chunks]):
                bar.update(done.result())
        except BrokenProcessPool:  # a process that died (the kernel's OOM killer, a crashing decoder) answers nothing
            raise DataError(
                f"a process decoding the images of {label} died before it was done (out of memory?); "
                f"try fewer at once with data.workers={max(1, workers // 2)}"
            ) from None
        finally:
            # the first bad file (or Ctrl-C) ends the build without decoding the rest
            pool.shutdown(wait=False, cancel_futures=True)


_decoder: dict = {}  # in a decoding process: the open .npy and what to decode into it


def _start_decoder(
    path: Path, channels: int, size: tuple[int, int], max_pixels: int, key: str, in_process: bool = False
) -> None:
    if not in_process:
        # the parent's signal handling is not ours: Ctrl-C is the parent's to handle (it ends the
        # pool), the pool's SIGTERM just ends this process, and no signal here may reach the
        # parent's wakeup pipe, which would take it for a signal to the parent
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _end_with_parent()
        torch.set_num_threads(1)  # one image at a time per process; the processes fill the cores
    _decoder.update(out=np.lib.format.open_memmap(path, mode="r+"), args=(channels, size, max_pixels, key))


def _end_with_parent() -> None:
    """Linux: end this process when the one that started it ends, even by SIGKILL. An orphan would
    keep decoding into a file no one reads, holding the cache's lock and the parent's stdout."""
    if sys.platform != "linux":
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call: nothing would send the signal
            os._exit(1)


def _stop_decoder() -> None:
    _decoder.clear()


def _decode_chunk(chunk: tuple[int, list[Path]]) -> int:
    start, paths = chunk
    out, args = _decoder["out"], _decoder["args"]
    for i, path in enumerate(paths):
        out[start + i] = _decode_file(path, *args).numpy()
    return len(paths)


def _unchanged(root: Path, files: list[Path], stats: np.ndarray) -> None:
    """One line if an image was changed, replaced or removed while the cache was being built."""
    for path, (size, mtime) in zip(files, stats.tolist()):
        try:
            st = os.stat(path)
            same = (st.st_size, st.st_mtime_ns) == (size, mtime)
        except OSError:
            same = False
        if not same:
            raise DataError(
                f"{path} changed while the images of {root} were being decoded: the cache was not kept; "
                "run again once the folder no longer changes"
            )


def _inspect(path: Path, max_pixels: int, key: str) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (height, width)) from the file's header."""
    with _opened(path, max_pixels, key) as image:
        return image.mode, (image.height, image.width)


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int, key: str):
    """The image, its header read and its size checked against `max_pixels`, not yet decoded; one line
    for a file that is not a regular one or not an image."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # dlcli's own cap, in one line, instead of PIL's warning and error
    try:
        with open_regular(path) as f, Image.open(f) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise DataError(
                    f"{path} is {image.width}×{image.height} pixels ({pixels / 1e6:.1f} megapixels), "
                    f"more than {key}={max_pixels:,} allows (decoding it would take "
                    f"{size_text(pixels * len(image.getbands()))} of memory): shrink it, remove it, or "
                    f"raise the cap with {key}=N"
                )
            yield image
    except DataError:
        raise
    except Exception as exc:  # PIL's errors on damaged or unknown files vary: UnidentifiedImageError, OSError, ...
        raise _unreadable(path, exc) from None


def _decode_file(path: Path, channels: int, size: tuple[int, int], max_pixels: int, key: str) -> torch.Tensor:
    """One image as uint8 [channels, H, W], resized (with antialiasing) to `size`."""
    from torchvision.transforms.v2 import functional as TF

    with _opened(path, max_pixels, key) as image:
        pixels = TF.pil_to_tensor(_convert(image, channels, path))
    if tuple(pixels.shape[1:]) != size:
        pixels = TF.resize(pixels, list(size), antialias=True)
    return pixels


def _convert(image, channels: int, path: Path):
    """The PIL image in mode L (channels=1) or RGB (channels=3), 8 bits per channel."""
    from PIL import Image

    if image.mode == "F":
        raise DataError(
            f"{path} holds floating-point pixels (PIL mode F), whose range is unknown: save it "
            "as an 8- or 16-bit image (PNG, TIFF)"
        )
    if image.mode.startswith("I"):  # 16- or 32-bit gray: PIL's convert clips at 255, so scale to 8 bits instead
        image = Image.fromarray((np.clip(np.asarray(image), 0, 65535) >> 8).astype(np.uint8))
    elif image.mode in ("P", "PA"):  # a palette with transparency converts without PIL's warning through RGBA
        image = image.convert("RGBA")
    return image.convert("L" if channels == 1 else "RGB")


def _unreadable(path: Path, exc: BaseException) -> DataError:
    from PIL import UnidentifiedImageError

    # PIL's message for an unknown format repeats the path
    reason = (
        "no image format PIL knows"
        if isinstance(exc, UnidentifiedImageError)
        else f"{type(exc).__name__}: {one_line(exc)}"
    )
    return DataError(
        f"{path} could not be read as an image ({reason}): it is damaged or not an image; replace it or delete it"
    )
