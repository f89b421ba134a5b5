"""Image datasets: torchvision finds, downloads and decodes them once; dlcli caches uint8 tensors.

The cache (`<name>-<split>.pt`) holds the decoded images as one uint8 tensor [N, C, H, W] and
the labels, with the size and mtime of every source file it came from. A later run whose
sources are unchanged reads the cache and never imports torchvision (3 s of start-up here).
"""

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from dlcli.errors import DataError


@dataclass(frozen=True)
class ImageSet:
    folder: str  # torchvision's folder under data.root
    torchvision_class: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    classes: tuple[str, ...]
    shape: tuple[int, int, int]


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

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
KNOWN_SIZE = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
              "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}

IMAGE_SETS = {
    "mnist": ImageSet("MNIST/raw", "MNIST", *_MNIST_FILES, tuple("0123456789"), (1, 28, 28)),
    "fashion_mnist": ImageSet(
        "FashionMNIST/raw", "FashionMNIST", *_MNIST_FILES,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (1, 28, 28),
    ),
    "cifar10": ImageSet(
        "cifar-10-batches-py", "CIFAR10", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        (3, 32, 32),
    ),
}


def load_images(name: str, root: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (uint8 images [N, C, H, W], int64 labels [N]) of one split."""
    spec = IMAGE_SETS[name]
    root_path = Path(root).expanduser()
    sources = [root_path / spec.folder / f for f in (spec.train_files if train else spec.test_files)]
    split = "train" if train else "test"
    cache = _cache_file(root_path, f"{name}-{split}.pt")
    if all(p.is_file() for p in sources):
        _check_sizes(sources)  # cheap, every run: a truncated file never reaches training
        cached = _read_cache(cache, _fingerprint(sources))
        if cached is not None:
            return cached
    x, y = _decode(spec, root_path, train, download, sources)
    _check_checksums(root_path, sources)  # once per (re)build of the cache
    _write_cache(cache, x, y, _fingerprint(sources))
    return x, y


def _check_sizes(sources: list[Path]) -> None:
    for path in sources:
        expected = KNOWN_SIZE.get(path.name)
        if expected is not None and path.stat().st_size != expected:
            raise DataError(f"{path} has {path.stat().st_size:,} bytes, expected {expected:,}: it is truncated or "
                            "corrupted; delete it (with its .gz beside it, dlcli extracts it again; online, it is "
                            "downloaded again) or replace it with an intact copy")


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
                raise DataError(f"{path} fails its checksum (md5 {digest}, expected {KNOWN_MD5[key]}): the file is "
                                "corrupted; delete it so it is extracted or downloaded again, or replace it")


def _fingerprint(sources: list[Path]) -> list[list[int]]:
    return [[p.stat().st_size, p.stat().st_mtime_ns] for p in sources]


def _decode(spec: ImageSet, root: Path, train: bool, download: bool, sources: list[Path]):
    import torchvision  # imported only here: a cached dataset never pays for it

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    missing = [p.name for p in sources if not p.is_file()]
    where = root / spec.folder
    hint = "put the files there, or point data.root (or the DLCLI_DATA variable) at a folder that has them"
    try:
        dataset = dataset_class(str(root), train=train, download=download and bool(missing))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        if not missing:
            state = f"failed torchvision's integrity check ({exc})"
        elif download:
            reason = " ".join(str(exc).split())  # torchvision lists every mirror it tried, one per line
            state = f"missing: {', '.join(missing)}, and the download failed ({reason[:240]})"
        else:
            state = f"missing: {', '.join(missing)} (data.download=false)"
        raise DataError(f"{spec.torchvision_class} files in {where} {state}; {hint}") from None
    except OSError as exc:  # no network, or the root is not writable
        raise DataError(f"{spec.torchvision_class} files missing in {where} ({', '.join(missing)}) and the "
                        f"download failed ({type(exc).__name__}: {exc}); {hint}") from None
    except Exception as exc:  # torchvision's readers on damaged files
        raise DataError(f"{spec.torchvision_class} files in {where} could not be read ({type(exc).__name__}: "
                        f"{exc}); replace them with intact copies, or delete them to download again") from None
    x = torch.as_tensor(dataset.data)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # MNIST [N,H,W]; CIFAR [N,H,W,C]
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if tuple(x.shape[1:]) != spec.shape or x.dtype != torch.uint8 or len(x) != len(y):
        raise DataError(f"{where} holds images of shape {tuple(x.shape[1:])}, expected {spec.shape}; "
                        "replace the files with the original ones")
    return x.contiguous(), y


def _cache_file(root: Path, filename: str) -> Path:
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


def _read_cache(path: Path, fingerprint: list[list[int]]):
    try:
        blob = torch.load(path, weights_only=True)
        if blob["sources"] == fingerprint:
            return blob["x"], blob["y"]
    except Exception:  # absent, stale format or damaged: rebuild it from the sources
        pass
    return None


def _write_cache(path: Path, x: torch.Tensor, y: torch.Tensor, fingerprint: list[list[int]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            torch.save({"x": x, "y": y, "sources": fingerprint}, tmp)
        os.replace(tmp.name, path)
    except OSError:
        pass  # a cache we cannot write only costs time on the next run
