"""Data kept resident on the training device and batched as whole-tensor operations.

Images stay uint8 on the device; each batch is gathered by index and normalized in one
multiply-subtract, so the training loop has no per-sample Python and no DataLoader.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dlcli.settings import ImageDataSettings, ToyDataSettings


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
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def load_data(settings: ToyDataSettings | ImageDataSettings, seed: int, val_fraction: float,
              device: torch.device) -> DataBundle:
    """Load (or generate) the dataset, carve the validation split, move it all to `device`."""
    if isinstance(settings, ToyDataSettings):
        from dlcli.toy import make_toy

        classes = settings.num_classes
        train_x, train_y = make_toy(settings.name, settings.n_samples, settings.noise, classes,
                                    torch.Generator().manual_seed(seed))
        # the test points are drawn independently of the training points
        test_x, test_y = make_toy(settings.name, max(settings.n_samples // 4, 100), settings.noise, classes,
                                  torch.Generator().manual_seed(seed + 7919))
        shape, names = (2,), tuple(str(c) for c in range(classes))
        scale = shift = torch.zeros(())
    else:
        from dlcli.images import IMAGE_SETS, load_images

        train_x, train_y = load_images(settings.name, settings.root, True, settings.download)
        if settings.subset is not None:
            train_x, train_y = train_x[:settings.subset], train_y[:settings.subset]
        test_x, test_y = load_images(settings.name, settings.root, False, settings.download)
        spec = IMAGE_SETS[settings.name]
        shape, names = spec.shape, spec.classes
        std = torch.tensor(settings.std).view(1, -1, 1, 1)
        scale = 1.0 / (255.0 * std)
        shift = torch.tensor(settings.mean).view(1, -1, 1, 1) / std

    perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(train_y) * val_fraction))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    to = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return DataBundle(
        train=Split(to(train_x[train_idx]), to(train_y[train_idx])),
        val=Split(to(train_x[val_idx]), to(train_y[val_idx])),
        test=Split(to(test_x), to(test_y)),
        input_shape=shape,
        classes=names,
        scale=to(scale),
        shift=to(shift),
        augment=isinstance(settings, ImageDataSettings) and settings.augment,
        crop_padding=getattr(settings, "crop_padding", 0),
        flip=getattr(settings, "flip", False),
    )


def data_shape(settings: ToyDataSettings | ImageDataSettings) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of a dataset, without loading it."""
    if isinstance(settings, ToyDataSettings):
        return (2,), settings.num_classes
    from dlcli.images import IMAGE_SETS

    spec = IMAGE_SETS[settings.name]
    return spec.shape, len(spec.classes)


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches plus the remainder, except a remainder of one (batch norm cannot train on it)."""
    return n // batch_size + (n % batch_size > 1)


def train_batches(data: DataBundle, batch_size: int, generator: torch.Generator, start: int = 0):
    """Yield (inputs, labels) for one shuffled epoch, from batch index `start` on.

    The epoch's order and augmentation draws come from `generator` up front and move to the
    device once, so no batch waits on a host-to-device copy.
    """
    split = data.train
    n, device = len(split), split.y.device
    order = torch.randperm(n, generator=generator).to(device)
    if data.augment:
        shifts = torch.randint(0, 2 * data.crop_padding + 1, (n, 2), generator=generator).to(device)
        flips = (torch.rand(n, generator=generator) < (0.5 if data.flip else 0.0)).to(device)
    for b in range(start, batches_per_epoch(n, batch_size)):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        idx = order[rows]
        x = split.x.index_select(0, idx)
        if data.augment:
            x = crop_and_flip(x, shifts[rows], flips[rows], data.crop_padding)
        yield data.inputs(x), split.y.index_select(0, idx)


def eval_batches(data: DataBundle, split_name: str, batch_size: int):
    """Yield (inputs, labels) of a split in order, as views (no gather)."""
    split = data.split(split_name)
    for start in range(0, len(split), batch_size):
        yield data.inputs(split.x[start:start + batch_size]), split.y[start:start + batch_size]


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
