"""Data kept resident on the training device and batched as whole-tensor operations.

A data option names its loader by `_target_`; the loader returns whole splits as `Loaded`
tensors. Images stay uint8 on the device; each batch is gathered by index and normalized in one
multiply-subtract, so the training loop has no per-sample Python and no DataLoader. Feature rows
are standardized once, when they are loaded.
"""

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dlcli.data.builtin import IMAGE_SETS
from dlcli.data.loaded import Loaded
from dlcli.errors import ConfigError, DataError
from dlcli.machine import import_target
from dlcli.settings import ImageDataSettings, ToyDataSettings, kwargs_of, target_of

# keys of a data option that shape batches rather than loading: dlcli's, never passed to the loader
BATCH_KEYS = ("subset", "augment", "crop_padding", "flip", "sequence")


@dataclass
class Split:
    x: torch.Tensor  # uint8 [N, C, H, W] images, or float32 [N, 2] points
    y: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    classes: tuple[str, ...]
    scale: torch.Tensor  # x_float = x * scale - shift: /255 and (x - mean) / std in one step
    shift: torch.Tensor
    augment: bool
    crop_padding: int = 0
    flip: bool = False
    channels_last: bool = False  # hand CNNs NHWC batches (set for CUDA)
    sequence: str | None = None  # rows | pixels: hand images to the model as [N, steps, features]
    mean: list[float] = field(default_factory=list)  # as Loaded's: per channel (images) or feature (tables)
    std: list[float] = field(default_factory=list)
    features: tuple[str, ...] | None = None

    def record(self) -> dict:
        """What a checkpoint keeps to turn new inputs into model inputs as training did, without the
        dataset: dlcli predict and dlcli export read it (dlcli.inputs)."""
        images = self.train.x.dtype == torch.uint8
        return {
            "kind": "images" if images else "features",
            "shape": list(self.train.x.shape[1:]),
            "mean": list(self.mean),
            "std": list(self.std),
            "sequence": self.sequence,
            "classes": list(self.classes),
            "features": list(self.features) if self.features else None,
        }

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Float model inputs from stored rows (uint8 images or float points)."""
        if x.dtype != torch.uint8:
            return x
        x = x.float().mul_(self.scale).sub_(self.shift)
        if self.sequence == "rows":  # [N, C, H, W] -> [N, H, C*W]
            return x.permute(0, 2, 1, 3).flatten(2)
        if self.sequence == "pixels":  # -> [N, H*W, C]
            return x.flatten(2).transpose(1, 2)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def load_tables(spec, seed: int) -> Loaded:
    """Call the data option's loader: its config keys (less dlcli's batch keys) and, if it takes one, the seed."""
    target = target_of(spec)
    kwargs = {k: v for k, v in kwargs_of(spec).items() if k not in BATCH_KEYS}
    loader = import_target(
        target,
        "data._target_",
        "name a function that returns dlcli.data.Loaded, in the folder you run dlcli from or on PYTHONPATH",
    )
    if "seed" in inspect.signature(loader).parameters and "seed" not in kwargs:
        kwargs["seed"] = seed  # a data option that fixes its own seed (a test split's, say) keeps it
    try:
        loaded = loader(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"data._target_={target} rejected its arguments ({exc})") from None
    if not isinstance(loaded, Loaded):
        raise DataError(f"data._target_={target} returned {type(loaded).__name__}, not dlcli.data.Loaded")
    return loaded


def load_data(spec, seed: int, val_fraction: float, device: torch.device) -> DataBundle:
    """Load the dataset, carve the validation split, move it all to `device`."""
    loaded = load_tables(spec, seed)
    train_x, train_y, test_x, test_y = loaded.train_x, loaded.train_y, loaded.test_x, loaded.test_y
    subset = getattr(spec, "subset", None)
    if subset is not None:
        if subset > len(train_y):  # a subset that is the whole set would cost the whole set's time unasked
            raise ConfigError(
                f"data.subset={subset} is invalid: this training set has only {len(train_y):,} "
                f"samples; use data.subset={len(train_y)} or fewer, or null for all of them"
            )
        train_x, train_y = train_x[:subset], train_y[:subset]
    mean, std = torch.tensor(loaded.mean, dtype=torch.float32), torch.tensor(loaded.std, dtype=torch.float32)
    if train_x.dtype == torch.uint8:  # images: normalized per batch, on the device
        scale = 1.0 / (255.0 * std.view(1, -1, 1, 1))
        shift = mean.view(1, -1, 1, 1) / std.view(1, -1, 1, 1)
    else:  # feature rows: standardized once, here
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
        scale = shift = torch.zeros(())

    perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(train_y) * val_fraction))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    to = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    sequence = getattr(spec, "sequence", None)
    return DataBundle(
        train=Split(to(train_x[train_idx]), to(train_y[train_idx])),
        val=Split(to(train_x[val_idx]), to(train_y[val_idx])),
        test=Split(to(test_x), to(test_y)),
        input_shape=sequence_shape(tuple(train_x.shape[1:]), sequence),
        classes=tuple(loaded.classes),
        scale=to(scale),
        shift=to(shift),
        augment=bool(getattr(spec, "augment", False)) and train_x.dtype == torch.uint8,
        crop_padding=getattr(spec, "crop_padding", 0),
        flip=getattr(spec, "flip", False),
        sequence=sequence,
        mean=list(loaded.mean),
        std=list(loaded.std),
        features=loaded.features,
    )


def sequence_shape(shape: tuple[int, ...], sequence: str | None) -> tuple[int, ...]:
    """The shape a model sees: the image's, or (steps, features) when images are read as sequences."""
    if sequence is None:
        return shape
    c, h, w = shape
    return (h, c * w) if sequence == "rows" else (h * w, c)


def data_shape(spec) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of a dataset; dlcli's own sets answer without loading anything."""
    if isinstance(spec, ToyDataSettings):
        return (2,), spec.classes or (3 if spec.name == "spirals" else 2)
    if isinstance(spec, ImageDataSettings):
        image_set = IMAGE_SETS[spec.name]
        return sequence_shape(image_set.shape, spec.sequence), len(image_set.classes)
    loaded = load_tables(spec, seed=0)
    return tuple(loaded.train_x.shape[1:]), len(loaded.classes)


def batches_per_epoch(n: int, batch_size: int, processes: int = 1) -> int:
    """Full batches plus the remainder, if it gives every process at least two samples (batch
    norm cannot train on one): with one process, all but a remainder of one."""
    return n // batch_size + (n % batch_size >= 2 * processes)


def share(n: int, shard: tuple[int, int]) -> slice:
    """Process `rank`'s contiguous part of n items split among `size` processes (sizes differ by at most one)."""
    rank, size = shard
    return slice(n * rank // size, n * (rank + 1) // size)


def train_batches(
    data: DataBundle, batch_size: int, generator: torch.Generator, start: int = 0, shard: tuple[int, int] = (0, 1)
):
    """Yield (inputs, labels, global batch size) for one shuffled epoch, from batch index `start` on.

    The epoch's order and augmentation draws come from `generator` up front and move to the
    device once, so no batch waits on a host-to-device copy. With several processes, shard =
    (rank, processes): every process draws the same order and takes its share of each batch.
    """
    split = data.train
    n, device = len(split), split.y.device
    order = torch.randperm(n, generator=generator).to(device)
    if data.augment:
        shifts = torch.randint(0, 2 * data.crop_padding + 1, (n, 2), generator=generator).to(device)
        flips = (torch.rand(n, generator=generator) < (0.5 if data.flip else 0.0)).to(device)
    for b in range(start, batches_per_epoch(n, batch_size, shard[1])):
        rows = order[b * batch_size : (b + 1) * batch_size]
        mine = share(len(rows), shard)
        idx = rows[mine]
        x = split.x.index_select(0, idx)
        if data.augment:
            at = b * batch_size + mine.start
            x = crop_and_flip(x, shifts[at : at + len(idx)], flips[at : at + len(idx)], data.crop_padding)
        yield data.inputs(x), split.y.index_select(0, idx), len(rows)


def eval_batches(data: DataBundle, split_name: str, batch_size: int, shard: tuple[int, int] = (0, 1)):
    """Yield (inputs, labels) of a split (this process's share of it) in order, as views (no gather)."""
    split = data.split(split_name)
    mine = share(len(split), shard)
    for start in range(mine.start, mine.stop, batch_size):
        stop = min(start + batch_size, mine.stop)
        yield data.inputs(split.x[start:stop]), split.y[start:stop]


def crop_and_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by shifts[i] within a zero border of `pad` pixels and mirror it where flips[i],
    as one gather over the whole batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (shifts[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = shifts[:, 1, None] + torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]
