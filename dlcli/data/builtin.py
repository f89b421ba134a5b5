"""Image datasets: torchvision finds, downloads and decodes them once; dlcli caches uint8 tensors.

The cache (`<name>-<split>.npy`, see cache.py) holds the decoded images as uint8 [N, C, H, W]
and the labels, with the size and mtime of every source file it came from. A later run whose
sources are unchanged maps the cache and never imports torchvision (seconds of start-up).
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dlcli.data.cache import build_cache, building, cache_file, open_cache
from dlcli.errors import DataError, one_line

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ImageSet:
    folder: str  # torchvision's folder under data.root
    torchvision_class: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    hosts: tuple[str, ...]  # where torchvision downloads from: probed first, so no network fails at once


_MNIST_FILES = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)

# md5 of the uncompressed idx files (the .gz files torchvision downloads carry their own md5 check)
KNOWN_MD5 = {
    "MNIST/raw/train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "MNIST/raw/train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "MNIST/raw/t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "MNIST/raw/t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    "FashionMNIST/raw/train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "FashionMNIST/raw/train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "FashionMNIST/raw/t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "FashionMNIST/raw/t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
KNOWN_SIZE = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}

IMAGE_SETS = {
    "mnist": ImageSet(
        "MNIST/raw",
        "MNIST",
        *_MNIST_FILES,
        tuple("0123456789"),
        (1, 28, 28),
        ("ossci-datasets.s3.amazonaws.com", "yann.lecun.com"),
    ),
    "fashion_mnist": ImageSet(
        "FashionMNIST/raw",
        "FashionMNIST",
        *_MNIST_FILES,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (1, 28, 28),
        ("fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
    ),
    "cifar10": ImageSet(
        "cifar-10-batches-py",
        "CIFAR10",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (3, 32, 32),
        ("www.cs.toronto.edu",),
    ),
}


def load_image_set(name: str, root: str, download: bool, mean: list[float], std: list[float]):
    """Both splits of a torchvision dataset as dlcli.data.Loaded."""
    from dlcli.data.loaded import Loaded

    train_x, train_y = load_images(name, root, True, download)
    test_x, test_y = load_images(name, root, False, download)
    return Loaded(train_x, train_y, test_x, test_y, IMAGE_SETS[name].classes, list(mean), list(std))


def check_sources(name: str, root: str, download: bool) -> None:
    """The files are there (and of the right size), or can be downloaded; else one line at once.

    Needs no torch, so a wrong data.root is answered before the second it takes to import it.
    """
    spec = IMAGE_SETS[name]
    root_path = Path(root).expanduser()
    sources = [root_path / spec.folder / f for f in (*spec.train_files, *spec.test_files)]
    missing = [p.name for p in sources if not p.is_file()]
    where = root_path / spec.folder
    if not missing:
        _check_sizes(sources)
    elif not download:
        raise DataError(
            f"{spec.torchvision_class} files in {where} missing: {', '.join(missing)} (data.download=false); {_HINT}"
        )
    elif unreachable := _unreachable(spec.hosts):
        raise DataError(
            f"{spec.torchvision_class} files missing in {where} ({', '.join(missing)}) and they cannot "
            f"be downloaded: {unreachable}; {_HINT}"
        )


_HINT = "put the files there, or point data.root (or the DLCLI_DATA variable) at a folder that has them"


def load_images(name: str, root: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (uint8 images [N, C, H, W], int64 labels [N]) of one split."""
    spec = IMAGE_SETS[name]
    root_path = Path(root).expanduser()
    sources = [root_path / spec.folder / f for f in (spec.train_files if train else spec.test_files)]
    split = "train" if train else "test"
    stem = cache_file(root_path, f"{name}-{split}")
    check_sources(name, root, download)  # cheap, every run: a truncated file never reaches training
    with building(stem):
        if all(p.is_file() for p in sources):
            stored = open_cache(stem, _fingerprint(sources))
            if stored is not None:
                return stored
        x, y = _decode(spec, root_path, train, sources)
        _check_checksums(root_path, sources)  # once per (re)build of the cache
        stored = build_cache(stem, _fingerprint(sources), tuple(x.shape), y, lambda path: _write(path, x))
    return stored if stored is not None else (x, y)


def _write(path: Path, x: torch.Tensor) -> None:
    """torchvision reads these sets whole (CIFAR-10, the largest, is 150 MB): they are copied in at once."""
    import numpy as np

    out = np.lib.format.open_memmap(path, mode="r+")
    out[:] = x.numpy()
    out.flush()


def _check_sizes(sources: list[Path]) -> None:
    for path in sources:
        expected = KNOWN_SIZE.get(path.name)
        if expected is not None and path.stat().st_size != expected:
            raise DataError(
                f"{path} has {path.stat().st_size:,} bytes, expected {expected:,}: it is truncated or "
                "corrupted; delete it (with its .gz beside it, dlcli extracts it again; online, it is "
                "downloaded again) or replace it with an intact copy"
            )


def _check_checksums(root: Path, sources: list[Path]) -> None:
    for path in sources:
        key = path.relative_to(root).as_posix()
        if key in KNOWN_MD5:
            md5 = hashlib.md5()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    md5.update(block)
            digest = md5.hexdigest()
            if digest != KNOWN_MD5[key]:
                raise DataError(
                    f"{path} fails its checksum (md5 {digest}, expected {KNOWN_MD5[key]}): the file is "
                    "corrupted; delete it so it is extracted or downloaded again, or replace it"
                )


def _fingerprint(sources: list[Path]) -> list[list[int]]:
    return [[p.stat().st_size, p.stat().st_mtime_ns] for p in sources]


def _decode(spec: ImageSet, root: Path, train: bool, sources: list[Path]):
    where = root / spec.folder
    missing = [p.name for p in sources if not p.is_file()]
    if missing:  # check_sources found the download hosts reachable
        _download(spec, root, missing)
    import torch
    import torchvision  # imported only here: a cached dataset never pays for it

    try:
        dataset = getattr(torchvision.datasets, spec.torchvision_class)(str(root), train=train, download=False)
    except Exception as exc:  # torchvision's readers on damaged files
        raise DataError(
            f"{spec.torchvision_class} files in {where} could not be read ({type(exc).__name__}: "
            f"{one_line(exc)}); replace them with intact copies, or delete them to download again"
        ) from None
    x = torch.as_tensor(dataset.data)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # MNIST [N,H,W]; CIFAR [N,H,W,C]
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if tuple(x.shape[1:]) != spec.shape or x.dtype != torch.uint8 or len(x) != len(y):
        raise DataError(
            f"{where} holds images of shape {tuple(x.shape[1:])}, expected {spec.shape}; "
            "replace the files with the original ones"
        )
    return x.contiguous(), y


def _download(spec: ImageSet, root: Path, missing: list[str]) -> None:
    """Download with torchvision into a temporary folder and move the files into `root` only once they
    are all there: a failed download leaves no empty folders behind."""
    what = f"{spec.torchvision_class} files missing in {root / spec.folder} ({', '.join(missing)})"
    import torchvision

    staging = Path(tempfile.mkdtemp(prefix="dlcli-download-"))
    try:
        getattr(torchvision.datasets, spec.torchvision_class)(str(staging), train=True, download=True)
        for file in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = root / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(file, target)
    except Exception as exc:  # torchvision lists every mirror it tried; keep each distinct reason once
        raise DataError(f"{what} and the download failed ({one_line(exc)}); {_HINT}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unreachable(hosts: tuple[str, ...], timeout: float = 3.0) -> str:
    """'' if any download host's name resolves, else why none did (a lookup that hangs counts as failed)."""
    reasons: dict[str, str] = {}

    def lookup(host: str) -> None:
        try:
            socket.getaddrinfo(host, 443)
            reasons[host] = ""
        except OSError as exc:
            reasons[host] = exc.strerror or str(exc)

    threads = [threading.Thread(target=lookup, args=(h,), daemon=True) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(reasons.get(h) == "" for h in hosts):
        return ""
    return "; ".join(f"{h}: {reasons.get(h, f'no answer in {timeout:g} s')}" for h in hosts) + " (no internet here?)"
