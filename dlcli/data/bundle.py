"""Data kept resident on the training device, or memory-mapped on disk, and batched as whole-tensor
operations.

A data option names its loader by `_target_`; the loader returns whole splits as `Loaded`
tensors. Images stay uint8; each batch is gathered by index and normalized on the device in one
multiply-subtract, so the training loop has no per-sample Python and no DataLoader. With
data.storage=memory the splits sit on the training device; with disk they stay in the
memory-mapped cache and each batch is gathered from it, a batch ahead, in a thread (and on CUDA
copied from pinned memory on a stream of its own), so the same batches in the same order reach
the model either way. Feature rows are standardized once, when they are loaded.
"""

import hashlib
import inspect
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlcli.data.builtin import IMAGE_SETS
from dlcli.data.cache import build_cache, building, cache_file, open_cache, size_text
from dlcli.data.loaded import Loaded
from dlcli.errors import ConfigError, DataError
from dlcli.machine import available_memory, import_target
from dlcli.settings import (
    Custom,
    ImageDataSettings,
    ImageFolderSettings,
    ToyDataSettings,
    check_augmentation,
    check_batch_keys,
    check_folds,
    check_mixing,
    kwargs_of,
    target_of,
)

log = logging.getLogger("dlcli")

# keys of a data option that shape batches rather than loading: dlcli's, never passed to the loader
BATCH_KEYS = (
    "subset",
    "augment",
    "crop_padding",
    "flip",
    "sequence",
    "storage",
    "memory_fraction",
    "sampler",
    "mixup",
    "cutmix",
    "policy",
    "erasing",
    "folds",
    "fold",
)

# data.policy: torchvision.transforms.v2's class for each (autoaugment: its default, ImageNet policy)
POLICY_TRANSFORMS = {"randaugment": "RandAugment", "trivialaugment": "TrivialAugmentWide", "autoaugment": "AutoAugment"}


@dataclass
class Split:
    x: torch.Tensor  # uint8 [N, C, H, W] images or float32 [N, F] rows on the device; or the store they are rows of
    y: torch.Tensor  # int64 [N], on the training device
    rows: torch.Tensor | None = None  # data.storage=disk: sample i is x[rows[i]], x the memory-mapped cache (CPU)

    def __len__(self) -> int:
        return len(self.y)

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The samples at positions idx: on the device, or (disk) gathered from the map on the CPU."""
        return self.x.index_select(0, idx) if self.rows is None else _rows(self.x, self.rows[idx])

    def take(self, start: int, stop: int) -> torch.Tensor:
        """Samples start..stop: a view on the device, or (disk) gathered from the map on the CPU."""
        return self.x[start:stop] if self.rows is None else _rows(self.x, self.rows[start:stop])

    def head(self, n: int) -> torch.Tensor:
        """The first n samples, on the training device."""
        return self.take(0, n).to(self.y.device)


def _rows(store: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of the mapped store, copied by NumPy: one thread, the one that asks (the gathering thread
    of `ahead`), where torch's index_select would start a second team of its intra-op threads on
    the cores that train."""
    if store.device.type != "cpu":  # a loader of one's own may hand over a store on the GPU: no map to read
        return store.index_select(0, rows.to(store.device))
    return torch.from_numpy(np.take(store.numpy(), rows.numpy(), axis=0))


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
    storage: str = "memory"  # memory | disk: where the splits' samples are (data.storage, auto resolved)
    sampler: str = "shuffle"  # data.sampler
    # data.policy and data.erasing: uint8 images [N, C, H, W] -> the same, each image augmented on its own
    transform: Any = None

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


def load_data(spec, seed: int, val_fraction: float, device: torch.device, processes: int = 1) -> DataBundle:
    """Load the dataset, carve the validation split, and put it on `device` or leave it mapped
    (data.storage); `processes`: how many processes of the run on this machine each load it."""
    loaded = load_tables(spec, seed)
    train_x, train_y, test_x, test_y = loaded.train_x, loaded.train_y, loaded.test_x, loaded.test_y
    train_rows = loaded.train_rows if loaded.train_rows is not None else torch.arange(len(train_y))
    test_rows = loaded.test_rows if loaded.test_rows is not None else torch.arange(len(test_y))
    subset = getattr(spec, "subset", None)
    if subset is not None:
        if subset > len(train_y):  # a subset that is the whole set would cost the whole set's time unasked
            raise ConfigError(
                f"data.subset={subset} is invalid: this training set has only {len(train_y):,} "
                f"samples; use data.subset={len(train_y)} or fewer, or null for all of them"
            )
        train_rows, train_y = train_rows[:subset], train_y[:subset]
    mean, std = torch.tensor(loaded.mean, dtype=torch.float32), torch.tensor(loaded.std, dtype=torch.float32)
    images = train_x.dtype == torch.uint8
    if images:  # images: normalized per batch, on the device
        scale = 1.0 / (255.0 * std.view(1, -1, 1, 1))
        shift = mean.view(1, -1, 1, 1) / std.view(1, -1, 1, 1)
    else:  # feature rows: standardized once, here
        train_x, test_x = (_select(train_x, train_rows) - mean) / std, (_select(test_x, test_rows) - mean) / std
        train_rows, test_rows = torch.arange(len(train_y)), torch.arange(len(test_y))
        scale = shift = torch.zeros(())
    storage = choose_storage(spec, train_x, len(train_rows) + len(test_rows), device, processes)
    if storage == "disk" and not images:  # parsed whole, then standardized: mapped from a file of their own
        train_x, test_x, test_rows = spill(spec, train_x, train_y, test_x, test_y)
        train_rows = torch.arange(len(train_y))

    folds = batch_key(spec, "folds", None)
    if folds is None:
        perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(len(train_y) * val_fraction))
        val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    else:
        val_idx, train_idx = fold_split(train_y, folds, batch_key(spec, "fold", 0), seed)
    to = lambda t: t.to(device, non_blocking=True)  # noqa: E731

    def split(x: torch.Tensor, rows: torch.Tensor, y: torch.Tensor) -> Split:
        if storage == "disk":
            return Split(x, to(y), rows)
        return Split(to(_select(x, rows)), to(y))

    sequence = getattr(spec, "sequence", None)
    return DataBundle(
        train=split(train_x, train_rows[train_idx], train_y[train_idx]),
        val=split(train_x, train_rows[val_idx], train_y[val_idx]),
        test=split(test_x, test_rows, test_y),
        input_shape=sequence_shape(tuple(train_x.shape[1:]), sequence),
        classes=tuple(loaded.classes),
        scale=to(scale),
        shift=to(shift),
        augment=bool(getattr(spec, "augment", False)) and images,
        crop_padding=getattr(spec, "crop_padding", 0),
        flip=getattr(spec, "flip", False),
        sequence=sequence,
        mean=list(loaded.mean),
        std=list(loaded.std),
        features=loaded.features,
        storage=storage,
        sampler=batch_key(spec, "sampler", "shuffle"),
        transform=augmentation(spec) if images else None,
    )


def spill(spec, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor):
    """A table's standardized splits written to one .npy cache (train rows, then test rows) and mapped:
    (store, store, test rows). Named by a digest of the rows, so a run on the same table finds it."""
    digest = hashlib.sha256()
    for t in (train_x, train_y, test_x, test_y):
        digest.update(str(tuple(t.shape)).encode() + t.contiguous().numpy().tobytes())
    fingerprint = ["table", 1, digest.hexdigest()]
    source = Path(getattr(spec, "path", None) or "table").expanduser()
    stem = cache_file(source.resolve().parent, f"table-{source.stem}-{digest.hexdigest()[:12]}")
    n = len(train_x)

    def fill(path: Path) -> None:
        out = np.lib.format.open_memmap(path, mode="r+")
        out[:n], out[n:] = train_x.numpy(), test_x.numpy()
        out.flush()

    with building(stem):
        stored = open_cache(stem, fingerprint) or build_cache(
            stem,
            fingerprint,
            (n + len(test_x), *train_x.shape[1:]),
            torch.cat([train_y, test_y]),
            fill,
            dtype="float32",
        )
    if stored is None:  # no folder to write the cache in: the rows stay where they are
        raise DataError(
            f"data.storage=disk needs a folder for the table's cache and {stem.parent} cannot be written; "
            "set DLCLI_CACHE=DIR, or use data.storage=memory"
        )
    return stored[0], stored[0], torch.arange(n, n + len(test_x))


def fold_split(labels: torch.Tensor, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Part `fold` of the training split cut in `folds` stratified parts, and the rest, both sorted: the
    samples, shuffled by `seed`, are grouped by class and dealt out to the parts in turn, so each part
    holds its share of every class (within one sample)."""
    if folds > len(labels):
        raise ConfigError(
            f"data.folds={folds} is invalid: the training split has only {len(labels):,} samples to cut in "
            f"parts; use data.folds={len(labels)} or fewer"
        )
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    by_class = shuffled[torch.argsort(labels[shuffled], stable=True)]
    part = torch.empty(len(labels), dtype=torch.long)
    part[by_class] = torch.arange(len(labels)) % folds
    return (part == fold).nonzero().squeeze(1), (part != fold).nonzero().squeeze(1)


def _select(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x's rows, with no copy when they are all of x in order (a table, or a split kept whole)."""
    whole = len(rows) == len(x) and bool((rows == torch.arange(len(x))).all())
    return x if whole else x[rows]


def choose_storage(spec, x: torch.Tensor, n: int, device: torch.device, processes: int) -> str:
    """data.storage, with auto resolved: memory when the n images (one copy per process on this
    machine) take at most data.memory_fraction of the RAM available, and on CUDA of the GPU's free
    memory too; else disk. Logs which, and why."""
    wanted = batch_key(spec, "storage", "memory")
    fraction = batch_key(spec, "memory_fraction", ImageFolderSettings.memory_fraction)
    if wanted != "auto":
        return wanted
    need = n * x[:1].numel() * x.element_size()
    ram = available_memory()
    fits = need * processes <= fraction * ram
    reason = (
        f"the {'images' if x.dtype == torch.uint8 else 'rows'} take {size_text(need)}{f' in each of {processes} processes' if processes > 1 else ''}, "
        f"{'within' if fits else 'more than'} data.memory_fraction={fraction:g} of the {size_text(ram)} of RAM available"
    )
    if fits and device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        fits = need <= fraction * free
        reason += f", and {'within' if fits else 'more than'} {fraction:g} of the GPU's {size_text(free)} free"
    storage = "memory" if fits else "disk"
    log.info(f"data.storage=auto: {storage}, as {reason}")
    return storage


def batch_key(spec, key: str, default: Any) -> Any:
    """One of the batch keys this change reads (storage, memory_fraction, sampler, mixup, cutmix): the
    schema's, or what a data=custom option adds with +data.KEY=..., checked as the schemas check it."""
    if not isinstance(spec, Custom):
        return getattr(spec, key, default)
    value = spec.kwargs.get(key, default)
    keys = {k: spec.kwargs.get(k, getattr(ImageFolderSettings, k)) for k in ("storage", "memory_fraction", "sampler")}
    check_batch_keys(**keys)
    check_mixing(spec.kwargs.get("mixup", 0.0), spec.kwargs.get("cutmix", 0.0))
    check_augmentation(spec.kwargs.get("policy", "none"), spec.kwargs.get("erasing", 0.0))
    check_folds(spec.kwargs.get("folds"), spec.kwargs.get("fold", 0))
    return value


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

    The epoch's order and augmentation draws come from `generator` up front; on the memory path
    they move to the device once, so no batch waits on a host-to-device copy. With several
    processes, shard = (rank, processes): every process draws the same order and takes its share
    of each batch.
    """
    split = data.train
    n, device = len(split), split.y.device
    # drawn on the CPU, then moved to the device once per epoch: no batch waits on a copy of its indices
    order = balanced_order(split.y, generator) if data.sampler == "balanced" else torch.randperm(n, generator=generator)
    if data.augment:
        shifts = torch.randint(0, 2 * data.crop_padding + 1, (n, 2), generator=generator).to(device)
        flips = (torch.rand(n, generator=generator) < (0.5 if data.flip else 0.0)).to(device)
    on_device = order.to(device)
    # the disk path gathers by the CPU copy of the order (in the gathering thread); labels and draws by the device's
    by = on_device if split.rows is None else order

    def gathered(b: int) -> tuple[tuple[slice, slice], torch.Tensor]:
        batch = slice(b * batch_size, min((b + 1) * batch_size, n))
        mine = share(batch.stop - batch.start, shard)
        return (batch, mine), split.gather(by[batch][mine])

    batches = map(gathered, range(start, batches_per_epoch(n, batch_size, shard[1])))
    for (batch, mine), x in batches if split.rows is None else ahead(batches, device):
        if data.augment:
            at = batch.start + mine.start
            x = crop_and_flip(x, shifts[at : at + len(x)], flips[at : at + len(x)], data.crop_padding)
        if data.transform is not None:
            x = data.transform(x)
        yield data.inputs(x), split.y.index_select(0, on_device[batch][mine]), batch.stop - batch.start


def mixing(spec, classes: int):
    """data.mixup and data.cutmix as one transform of a training batch, (images, labels) -> (mixed
    images, soft labels), from torchvision.transforms.v2; with both, one of the two per batch. None: off."""
    alphas = [(batch_key(spec, "mixup", 0.0), "MixUp"), (batch_key(spec, "cutmix", 0.0), "CutMix")]
    if not any(alpha for alpha, _ in alphas):
        return None
    if getattr(spec, "sequence", None):
        raise ConfigError(
            "data.mixup and data.cutmix mix images: with data.sequence the model reads rows or pixels as "
            "steps; set data.mixup=0 data.cutmix=0, or data.sequence=null"
        )
    from torchvision.transforms import v2

    chosen = [getattr(v2, name)(alpha=float(alpha), num_classes=classes) for alpha, name in alphas if alpha]
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)


def augmentation(spec):
    """data.policy and data.erasing as one transform of a uint8 batch that draws for each image on its
    own (torchvision's v2 transforms draw once per call, which for a whole batch is one draw for all),
    from torch's generator, which checkpoints keep. None: off."""
    policy, erasing = batch_key(spec, "policy", "none"), float(batch_key(spec, "erasing", 0.0))
    if policy == "none" and not erasing:
        return None
    from torchvision.transforms import v2

    chosen = [getattr(v2, POLICY_TRANSFORMS[policy])()] if policy != "none" else []
    each = v2.Compose(chosen + ([v2.RandomErasing(p=erasing, value=0)] if erasing else []))
    return lambda x: torch.stack([each(image) for image in x])


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An epoch of len(labels) draws (with replacement): each picks one of the classes present evenly,
    then one of that class's samples evenly, from `generator` alone, so a resumed epoch draws the same."""
    y = labels.cpu()
    counts = torch.bincount(y)
    present = counts.nonzero().squeeze(1)
    by_class = torch.argsort(y, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    drawn = present[torch.randint(len(present), (len(y),), generator=generator)]
    within = (torch.rand(len(y), generator=generator, dtype=torch.float64) * counts[drawn]).long()
    return by_class[starts[drawn] + within.minimum(counts[drawn] - 1)]


def eval_batches(data: DataBundle, split_name: str, batch_size: int, shard: tuple[int, int] = (0, 1)):
    """Yield (inputs, labels) of a split (this process's share of it) in order: views on the memory
    path (no gather), gathered a batch ahead on the disk path."""
    split = data.split(split_name)
    mine = share(len(split), shard)
    spans = [(s, min(s + batch_size, mine.stop)) for s in range(mine.start, mine.stop, batch_size)]
    batches = ((span, split.take(*span)) for span in spans)
    for (start, stop), x in batches if split.rows is None else ahead(batches, split.y.device):
        yield data.inputs(x), split.y[start:stop]


_DONE = object()


def ahead(items: Iterator[tuple[Any, torch.Tensor]], device: torch.device, depth: int = 2):
    """The disk path's batches, each (meta, samples gathered on the CPU), with the samples on `device`:
    a thread gathers them (reading the map's pages) up to `depth` batches ahead of the one trained
    on; on CUDA it pins them and they are copied on a stream of their own, a batch ahead, so the
    GPU does not wait for the host."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    cuda = device.type == "cuda"

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def gather() -> None:
        try:
            for meta, x in items:
                if not put((meta, x.pin_memory() if cuda else x)):
                    return
            put(_DONE)
        except BaseException as exc:  # the consumer raises it
            put(exc)

    worker = threading.Thread(target=gather, name="dlcli-gather", daemon=True)
    worker.start()
    stream = torch.cuda.Stream(device) if cuda else None

    def copied():
        item = ready.get()
        if item is _DONE:
            return None
        if isinstance(item, BaseException):
            raise item
        meta, x = item
        if stream is None:
            return meta, x, None
        with torch.cuda.stream(stream):
            x = x.to(device, non_blocking=True)
            arrived = torch.cuda.Event()
            arrived.record(stream)
        return meta, x, arrived

    try:
        pending = copied()
        while pending is not None:
            following = copied()  # its copy is under way while the model trains on `pending`
            meta, x, arrived = pending
            if arrived is not None:  # the model's stream waits for this batch's copy alone
                current = torch.cuda.current_stream(device)
                current.wait_event(arrived)
                x.record_stream(current)  # its memory is not reused before the model is done with it
            yield meta, x
            pending = following
    finally:
        stop.set()
        worker.join(timeout=10)  # a gather under way ends within a batch; none is left waiting on the queue


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
