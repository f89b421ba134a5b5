"""Users' own images in torchvision's ImageFolder layout, decoded once into a uint8 cache.

    root/cat/1.png, root/dog/2.jpg, ...        a seeded stratified test fraction is held out
    root/train/cat/1.png, root/test/cat/9.png  the given split (train/ alone: a test fraction of it)

One sub-folder per class (nested folders inside a class count too), classes in sorted order as
ImageFolder numbers them; hidden files and folders are skipped. Images of any size and mode are
converted to `channels` and resized to `image_size`, both inferred from the first image when not
given. The cache sits beside the image folder (in its parent's dlcli-cache/, see
images._cache_file), not inside it, where ImageFolder would take it for a class.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from dlcli.data.cache import cache_file, read_cache, write_cache
from dlcli.data.loaded import Loaded
from dlcli.data.scan import INSIDE, Scan
from dlcli.data.tables import check_fraction, hold_out
from dlcli.errors import ConfigError, DataError, one_line
from dlcli.files import open_regular
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
) -> Loaded:
    """Images as uint8 [N, C, H, W] (C = `channels`, H×W = `image_size`), labels by class folder,
    mean/std per channel in [0, 1] units from the training split."""
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

    fingerprint = _fingerprint(root, files, classes, n_train, channels, size)
    cache = cache_file(root.resolve().parent, _cache_name(root, channels, size))
    cached = read_cache(cache, fingerprint)
    x, y = (
        cached
        if cached is not None
        else (decode_all(files, channels, size, max_pixels, "data.max_pixels"), torch.tensor(labels))
    )
    if test_dir is None:
        train_x, train_y, test_x, test_y = hold_out(x, y, test_fraction, seed, str(train_dir))
    else:
        train_x, train_y, test_x, test_y = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    loaded = Loaded(train_x, train_y, test_x, test_y, classes, *channel_stats(train_x))
    if cached is None:  # only a load that succeeded leaves a cache behind
        write_cache(cache, x, y, fingerprint)
    return loaded


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population) of uint8 images [N, C, H, W], in [0, 1] units.

    From a 256-bin histogram per channel: exact, and it needs no float copy of the images.
    """
    values = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        m = (counts * values).sum() / counts.sum()
        s = ((counts * (values - m) ** 2).sum() / counts.sum()).sqrt()
        mean.append(m.item() / 255)
        std.append(s.item() / 255 if s > 0 else 1.0)  # a constant channel: leave its scale alone
    return mean, std


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
    return f"folder-{stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"


def _fingerprint(
    root: Path,
    files: list[Path],
    classes: tuple[str, ...],
    n_train: int,
    channels: int | None,
    size: tuple[int, int] | None,
) -> list[list]:
    """What the cached tensors were made from: options, classes, split and every file's path, size and mtime."""
    head = [
        ["image_folder", 1],
        ["channels", channels or 0],
        ["size", *(size or ())],
        ["classes", *classes],
        ["n_train", n_train],
    ]
    stats = [os.stat(p) for p in files]
    return head + [[p.relative_to(root).as_posix(), s.st_size, s.st_mtime_ns] for p, s in zip(files, stats)]


# --- decoding -----------------------------------------------------------------------------


def decode_all(
    files: list[Path], channels: int | None, size: tuple[int, int] | None, max_pixels: int, key: str
) -> torch.Tensor:
    """All images as one uint8 tensor [N, C, H, W]; unset channels and size come from the first image.
    An image of more than `max_pixels` pixels (says its header) is refused before it is decoded."""
    if channels is None or size is None:
        mode, first_size = _inspect(files[0], max_pixels, key)
        channels = channels or (1 if mode in GRAY_MODES or mode.startswith("I;16") else 3)
        size = size or first_size
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
                    f"{_size(pixels * len(image.getbands()))} of memory): shrink it, remove it, or "
                    f"raise the cap with {key}=N"
                )
            yield image
    except DataError:
        raise
    except Exception as exc:  # PIL's errors on damaged or unknown files vary: UnidentifiedImageError, OSError, ...
        raise _unreadable(path, exc) from None


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


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
    import numpy as np
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
