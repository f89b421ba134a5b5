"""Checked settings: where a composed Hydra config becomes typed values, or one clear error.

Config flows one way: Hydra config -> `load_settings` -> builders -> trainer. Every config group
option names what it builds with `_target_`, Hydra's convention. dlcli's own options have a
schema here: a dataclass whose defaults are the option's values (written nowhere else), stored in
Hydra's ConfigStore as `schema/<group>/<option>` for the YAML option of that name to inherit, and
whose `__post_init__` checks ranges, so a bad value fails before any work starts. A `_target_`
without a schema (the user's own model, another torch.optim optimizer) gets its keys as they are,
and the class itself is the judge. This module does not import torch, so checking is cheap.
"""

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Union

from dlcli.errors import CheckpointError, ConfigError, first_line
from dlcli.files import kind
from dlcli.layout import BEST, EXAMPLE

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal")
POOLINGS = ("max", "avg", "lp")
CELLS = ("rnn", "lstm", "gru")
SEQUENCES = ("rows", "pixels")
TOY_SETS = ("spirals", "moons", "circles", "xor")
IMAGE_SETS = ("mnist", "fashion_mnist", "cifar10")
MONITORS = ("val_acc", "val_loss")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # N: a GPU's index
STORAGES = ("auto", "memory", "disk")
SAMPLERS = ("shuffle", "balanced")
POLICIES = ("none", "randaugment", "trivialaugment", "autoaugment")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise the one-line error `key=value is invalid: allowed` unless ok."""
    if not ok:
        raise ConfigError(f"{key}={show(value)} is invalid: {allowed}")


def show(value: Any) -> str:
    """The value as a user would type it: 'text', 1e-05, [64, 32]."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    require(value in options, key, value, "choose one of " + ", ".join(options))


def existing_checkpoint(path: str, key: str) -> Path:
    """The checkpoint file at `path`, or the one-line error a missing file or a folder deserves."""
    where = Path(path).expanduser()
    if where.exists() and not where.is_file() and not where.is_dir():  # never opened: a FIFO's read waits forever
        raise CheckpointError(
            f"{key}: {where} is a {kind(where.stat().st_mode)}, not a regular file; pass the "
            f"checkpoint .pt file, e.g. {key}={EXAMPLE}"
        )
    if not where.is_file():
        what = "is a folder" if where.is_dir() else "does not exist"
        raise CheckpointError(f"{key}: {where} {what}; pass the checkpoint .pt file, e.g. {key}={EXAMPLE}")
    return where


# --- models: dlcli passes input_shape and num_classes, the rest is the config ---------------------


@dataclass
class MLPSettings:
    _target_: str = "dlcli.models.MLP"
    depth: int = 2
    width: Any = 512  # an int, or a list with one width per hidden layer
    activation: str = "relu"
    dropout: float = 0.2
    batch_norm: bool = False
    init: str = "default"
    residual: bool = False  # an identity shortcut around each hidden layer after the first (equal widths)

    def __post_init__(self) -> None:
        require(
            isinstance(self.depth, int) and 0 <= self.depth <= 1000,
            "model.depth",
            self.depth,
            "an integer in [0, 1000] (0 is softmax regression)",
        )
        if isinstance(self.width, (list, tuple)):
            require(
                len(self.width) == self.depth,
                "model.width",
                self.width,
                f"a list needs one width per hidden layer ({self.depth}, model.depth), or give one int",
            )
            for w in self.width:
                require(
                    _is_int(w) and 0 < w <= 65536,
                    "model.width",
                    self.width,
                    "every width must be an integer in [1, 65536]",
                )
            self.width = list(self.width)
        else:
            require(
                _is_int(self.width) and 0 < self.width <= 65536,
                "model.width",
                self.width,
                "an integer in [1, 65536], or a list of them",
            )
        _choice("model.activation", self.activation, ACTIVATIONS)
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a probability in [0, 1)")
        _choice("model.init", self.init, INITS)
        if self.residual and isinstance(self.width, list):
            require(
                len(set(self.width)) <= 1,
                "model.width",
                self.width,
                "one width for every hidden layer with model.residual=true (a shortcut adds h to F(h))",
            )


@dataclass
class LeNetSettings:
    _target_: str = "dlcli.models.LeNet5"
    activation: str = "relu"
    pooling: str = "max"  # max | avg | lp (L2 pooling)

    def __post_init__(self) -> None:
        _choice("model.activation", self.activation, ACTIVATIONS)
        _choice("model.pooling", self.pooling, POOLINGS)


@dataclass
class AlexNetSettings:
    _target_: str = "dlcli.models.AlexNet"
    width: float = 0.25
    dropout: float = 0.5

    def __post_init__(self) -> None:
        require(0.0 < self.width <= 4.0, "model.width", self.width, "a multiplier in (0, 4]")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a probability in [0, 1)")


@dataclass
class ResNetSettings:
    _target_: str = "dlcli.models.ResNet"
    depth: int = 14  # 6n + 2 weight layers: n basic blocks per stage (20 is the paper's ResNet-20)
    width: int = 16  # channels of the first stage; the second and third have 2x and 4x

    def __post_init__(self) -> None:
        require(
            _is_int(self.depth) and 8 <= self.depth <= 1202 and (self.depth - 2) % 6 == 0,
            "model.depth",
            self.depth,
            "6n + 2 for n >= 1 basic blocks per stage: 8, 14, 20, 32, 44, 56, 110",
        )
        require(_is_int(self.width) and 1 <= self.width <= 1024, "model.width", self.width, "an integer in [1, 1024]")


@dataclass
class RecurrentSettings:
    _target_: str = "dlcli.models.Recurrent"
    cell: str = "rnn"  # rnn (tanh) | lstm | gru
    hidden: int = 128  # units per layer
    layers: int = 1
    leaky: float = 0.0  # α of the leaky unit h_t = α·h_(t-1) + (1 − α)·h̃_t, for the plain rnn cell

    def __post_init__(self) -> None:
        _choice("model.cell", self.cell, CELLS)
        require(
            _is_int(self.hidden) and 1 <= self.hidden <= 16384, "model.hidden", self.hidden, "an integer in [1, 16384]"
        )
        require(_is_int(self.layers) and 1 <= self.layers <= 64, "model.layers", self.layers, "an integer in [1, 64]")
        require(0.0 <= self.leaky < 1.0, "model.leaky", self.leaky, "a fraction in [0, 1): 0 is no leak")
        require(
            self.leaky == 0.0 or self.cell == "rnn",
            "model.leaky",
            self.leaky,
            f"0 for model.cell={self.cell}, whose gates already mix old and new state; leaky units are for "
            "model.cell=rnn",
        )


# --- data ----------------------------------------------------------------------------------------


@dataclass
class Folds:
    """k-fold cross-validation, a key pair of every data option."""

    # the training split in `folds` stratified parts, fixed by trainer.seed; part `fold` (0 to folds - 1)
    # is the validation split, the test split stays as it is; null: trainer.val_fraction of it instead
    folds: Optional[int] = None
    fold: int = 0


def check_folds(folds: Optional[int], fold: int) -> None:
    require(
        folds is None or (isinstance(folds, int) and not isinstance(folds, bool) and 2 <= folds <= 1000),
        "data.folds",
        folds,
        "an integer in [2, 1000] (k of k-fold cross-validation), or null for trainer.val_fraction",
    )
    top = f"0 to {folds - 1}" if folds else "0 (data.folds is null)"
    require(
        isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < (folds or 1),
        "data.fold",
        fold,
        f"the held-out part, {top}; sweep them all with -m data.fold='range({folds or 5})'",
    )


@dataclass
class ToyDataSettings(Folds):
    _target_: str = "dlcli.data.toy.load_toy"
    name: str = "spirals"
    n_samples: int = 6000
    noise: float = 0.1
    classes: Optional[int] = None

    def __post_init__(self) -> None:
        check_folds(self.folds, self.fold)
        _choice("data.name", self.name, TOY_SETS)
        require(100 <= self.n_samples <= 10_000_000, "data.n_samples", self.n_samples, "an integer in [100, 10000000]")
        require(0.0 <= self.noise <= 10.0, "data.noise", self.noise, "a number in [0, 10]")
        if self.classes is not None:
            require(
                self.name == "spirals", "data.classes", self.classes, f"{self.name} always has 2 classes; leave it null"
            )
            require(2 <= self.classes <= 20, "data.classes", self.classes, "an integer in [2, 20]")


@dataclass
class ImageDataSettings(Folds):
    """MNIST, Fashion-MNIST, CIFAR-10 through torchvision; the options differ in their defaults."""

    _target_: str = "dlcli.data.builtin.load_image_set"
    name: str = "mnist"
    root: str = "${oc.env:DLCLI_DATA,data}"  # torchvision's layout under it
    download: bool = True  # fetch missing files (needs the internet)
    mean: List[float] = field(default_factory=lambda: [0.1307])
    std: List[float] = field(default_factory=lambda: [0.3081])
    subset: Optional[int] = None  # use only the first N training images; the test set stays whole
    augment: bool = True  # random shifts (a crop after zero padding) and flips, batched on the device
    crop_padding: int = 2
    flip: bool = False  # a mirrored digit is another digit
    sequence: Optional[str] = None  # null: images; rows: H steps of W pixels; pixels: H*W steps of 1 (recurrent nets)
    # memory: the images on the training device; disk: left in the memory-mapped cache, each batch read
    # from it; auto: memory when they take at most memory_fraction of the RAM available (and of the GPU's)
    storage: str = "auto"
    memory_fraction: float = 0.5
    # shuffle: every sample once per epoch; balanced: each draw picks a class evenly, then a sample of it
    sampler: str = "shuffle"
    # Beta(alpha, alpha) mixing of a batch's images and labels (torchvision's MixUp and CutMix), on the
    # device; 0: off; with both on, one of the two per batch. The loss takes the mixed (soft) labels
    mixup: float = 0.0
    cutmix: float = 0.0
    # torchvision's augmentation policy, drawn for each image of a training batch on the device:
    # none | randaugment | trivialaugment | autoaugment (its ImageNet policy)
    policy: str = "none"
    erasing: float = 0.0  # the probability that each training image has a random rectangle erased

    def __post_init__(self) -> None:
        _choice("data.name", self.name, IMAGE_SETS)
        check_folds(self.folds, self.fold)
        check_mixing(self.mixup, self.cutmix)
        check_augmentation(self.policy, self.erasing)
        check_batch_keys(self.storage, self.memory_fraction, self.sampler)
        if self.sequence is not None:
            _choice("data.sequence", self.sequence, SEQUENCES)
        require(0 <= self.crop_padding <= 16, "data.crop_padding", self.crop_padding, "an integer in [0, 16] (pixels)")
        require(
            self.subset is None or self.subset >= 10,
            "data.subset",
            self.subset,
            "null (all training images) or an integer >= 10",
        )
        require(bool(self.root), "data.root", self.root, "a folder path (or set DLCLI_DATA)")
        channels = 3 if self.name == "cifar10" else 1
        require(len(self.mean) == channels, "data.mean", self.mean, f"one value per channel ({channels})")
        require(
            len(self.std) == channels and all(s > 0 for s in self.std),
            "data.std",
            self.std,
            f"one value > 0 per channel ({channels})",
        )


@dataclass
class FashionMNISTSettings(ImageDataSettings):
    name: str = "fashion_mnist"
    mean: List[float] = field(default_factory=lambda: [0.2860])
    std: List[float] = field(default_factory=lambda: [0.3530])
    augment: bool = True
    crop_padding: int = 0  # flips only: the items are centred, and shifts need more than the default 10 epochs
    flip: bool = True  # a mirrored shirt is still a shirt


@dataclass
class CIFAR10Settings(ImageDataSettings):
    name: str = "cifar10"
    mean: List[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: List[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])
    crop_padding: int = 4
    flip: bool = True


def _required(key: str, value: Any, example: str) -> None:
    if value == "???":
        raise ConfigError(f"{key} is required: {example}")


def _check_split(seed: int, test_fraction: float, subset: Optional[int]) -> None:
    require(
        0.0 < test_fraction < 1.0,
        "data.test_fraction",
        test_fraction,
        "a fraction in (0, 1), held out as the test split when the data has none",
    )
    require(seed >= 0, "data.seed", seed, "an integer >= 0")
    require(subset is None or subset >= 10, "data.subset", subset, "null (all training rows) or an integer >= 10")


@dataclass
class ImageFolderSettings(Folds):
    """Your own images in torchvision's ImageFolder layout: <root>/<class>/*.png, or with train/ and test/."""

    _target_: str = "dlcli.data.folders.load_image_folder"
    root: str = "???"  # the image folder
    channels: Optional[int] = None  # 1 or 3; null: 1 if the first image is grayscale, else 3
    image_size: Any = None  # 32 (square) or [height, width]; null: the first image's size
    test_fraction: float = 0.2  # held out, per class, when there is no test/ folder
    seed: int = 0  # of that test split: fixed apart from trainer.seed, so every run is scored on the same one
    subset: Optional[int] = None
    augment: bool = False
    crop_padding: int = 4
    flip: bool = False  # mirroring can change the class (digits, text); true suits most photos
    # pixels per image, read from its header before decoding: 8192×8192 (64 Mi), above the largest
    # cameras' photos (61 MP), below what a crafted file can claim (a 100 KB PNG of 10000×10000)
    max_pixels: int = 2**26
    storage: str = "auto"  # as for the built-in sets: auto | memory | disk
    memory_fraction: float = 0.5
    sampler: str = "shuffle"  # as for the built-in sets: shuffle | balanced
    mixup: float = 0.0  # as for the built-in sets
    cutmix: float = 0.0
    policy: str = "none"  # as for the built-in sets: none | randaugment | trivialaugment | autoaugment
    erasing: float = 0.0
    workers: int = 0  # processes that decode the images into the cache (0: one per core)

    def __post_init__(self) -> None:
        _required("data.root", self.root, "the folder of class sub-folders, e.g. data.root=~/pictures/pets")
        check_folds(self.folds, self.fold)
        check_batch_keys(self.storage, self.memory_fraction, self.sampler)
        check_mixing(self.mixup, self.cutmix)
        check_augmentation(self.policy, self.erasing)
        require(
            isinstance(self.workers, int) and 0 <= self.workers <= 1024,
            "data.workers",
            self.workers,
            "an integer in [0, 1024]: the processes that decode images into the cache (0: one per core)",
        )
        _check_split(self.seed, self.test_fraction, self.subset)
        check_max_pixels(self.max_pixels, "data.max_pixels")
        require(0 <= self.crop_padding <= 16, "data.crop_padding", self.crop_padding, "an integer in [0, 16] (pixels)")


def check_mixing(mixup: float, cutmix: float) -> None:
    for key, alpha in (("data.mixup", mixup), ("data.cutmix", cutmix)):
        require(
            isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha < math.inf,
            key,
            alpha,
            "a Beta alpha >= 0 (0: off; 0.2 for mixup and 1.0 for cutmix are usual)",
        )


def check_augmentation(policy: str, erasing: float) -> None:
    _choice("data.policy", policy, POLICIES)
    require(
        isinstance(erasing, (int, float)) and not isinstance(erasing, bool) and 0 <= erasing <= 1,
        "data.erasing",
        erasing,
        "a probability in [0, 1] (0: off; 0.25 is usual)",
    )


def check_batch_keys(storage: str, memory_fraction: float, sampler: str) -> None:
    _choice("data.sampler", sampler, SAMPLERS)
    _choice("data.storage", storage, STORAGES)
    require(
        isinstance(memory_fraction, (int, float))
        and not isinstance(memory_fraction, bool)
        and 0 < memory_fraction <= 1,
        "data.memory_fraction",
        memory_fraction,
        "a fraction in (0, 1]: of the available memory that data.storage=auto lets the images take",
    )


def check_max_pixels(value: Any, key: str) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        key,
        value,
        "an integer >= 1: the most pixels (width × height) an image may have",
    )


@dataclass
class CSVSettings(Folds):
    """A table with a header row: one label column, every other column a numeric feature."""

    _target_: str = "dlcli.data.tables.load_csv"
    path: str = "???"  # the CSV file
    label: str = "???"  # the column holding the class (names or integers)
    test_path: Optional[str] = None  # a CSV with the same columns as the test split; null: hold out test_fraction
    test_fraction: float = 0.2
    seed: int = 0  # of the held-out test split, fixed apart from trainer.seed
    subset: Optional[int] = None
    storage: str = "auto"  # as for images: memory, or the standardized rows mapped from a .npy on disk
    memory_fraction: float = 0.5
    sampler: str = "shuffle"  # as for the built-in sets: shuffle | balanced

    def __post_init__(self) -> None:
        _required("data.path", self.path, "the CSV file, e.g. data.path=iris.csv")
        _required("data.label", self.label, "the name of the label column, e.g. data.label=species")
        check_folds(self.folds, self.fold)
        _check_split(self.seed, self.test_fraction, self.subset)
        check_batch_keys(self.storage, self.memory_fraction, self.sampler)


@dataclass
class ArraysSettings(Folds):
    """An .npz file with x [N, F] and y [N], and optionally x_test and y_test."""

    _target_: str = "dlcli.data.tables.load_arrays"
    path: str = "???"  # the .npz file
    test_fraction: float = 0.2
    seed: int = 0  # of the held-out test split, fixed apart from trainer.seed
    subset: Optional[int] = None
    storage: str = "auto"  # as for images: memory, or the standardized rows mapped from a .npy on disk
    memory_fraction: float = 0.5
    sampler: str = "shuffle"  # as for the built-in sets: shuffle | balanced

    def __post_init__(self) -> None:
        _required("data.path", self.path, "the .npz file, e.g. data.path=features.npz")
        check_folds(self.folds, self.fold)
        _check_split(self.seed, self.test_fraction, self.subset)
        check_batch_keys(self.storage, self.memory_fraction, self.sampler)


# --- loss and regularization -----------------------------------------------------------------------


@dataclass
class CrossEntropySettings:
    _target_: str = "dlcli.losses.CrossEntropy"  # softmax + negative log-likelihood on the logits
    label_smoothing: float = 0.0  # the target puts 1 - s on the label and s/K on every class
    class_weights: Any = None  # null; balanced (n / (K * n_k) from the training split); or one weight per class

    def __post_init__(self) -> None:
        require(
            isinstance(self.label_smoothing, (int, float)) and 0.0 <= self.label_smoothing < 1.0,
            "loss.label_smoothing",
            self.label_smoothing,
            "a number in [0, 1)",
        )
        w = self.class_weights
        ok = (
            w is None
            or w == "balanced"
            or (
                isinstance(w, (list, tuple))
                and len(w) > 0
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf for v in w)
                and any(v > 0 for v in w)
            )
        )
        require(ok, "loss.class_weights", w, "null, balanced, or a list of one weight >= 0 per class, e.g. [1,5]")


@dataclass
class NLLSettings:
    _target_: str = "dlcli.losses.NLL"  # a log-softmax output layer + negative log-likelihood


@dataclass
class MSESettings:
    _target_: str = "dlcli.losses.Quadratic"  # 1/2 sum_k (softmax_k - onehot_k)^2, mean over the batch


@dataclass
class HingeSettings:
    _target_: str = "dlcli.losses.Hinge"
    margin: float = 1.0

    def __post_init__(self) -> None:
        require(self.margin > 0, "loss.margin", self.margin, "a number > 0")


@dataclass
class NoPenaltySettings:
    _target_: str = "dlcli.regularization.NoPenalty"  # no penalty


@dataclass
class L1Settings:
    _target_: str = "dlcli.regularization.L1"  # strength * sum |W| over weight matrices and conv kernels (never biases)
    strength: float = 1e-5

    def __post_init__(self) -> None:
        _check_strength(self.strength)


@dataclass
class L2Settings:
    _target_: str = "dlcli.regularization.L2"  # strength * sum ||W||_F^2 over weight matrices and conv kernels
    strength: float = 1e-4

    def __post_init__(self) -> None:
        _check_strength(self.strength)


@dataclass
class ElasticSettings:
    _target_: str = "dlcli.regularization.ElasticNet"  # strength * (l1_ratio * sum |W| + (1 - l1_ratio) * sum W^2)
    strength: float = 1e-4
    l1_ratio: float = 0.5

    def __post_init__(self) -> None:
        _check_strength(self.strength)
        require(0.0 <= self.l1_ratio <= 1.0, "regularization.l1_ratio", self.l1_ratio, "a number in [0, 1]")


def _check_strength(strength: float) -> None:
    require(0.0 <= strength < math.inf, "regularization.strength", strength, "a number >= 0")


# --- optimizers: torch.optim classes, called with the parameter groups -------------------------------


def _number(value: Any, key: str) -> float:
    """A key of a class dlcli has no schema for, that must still be a number."""
    require(isinstance(value, (int, float)) and not isinstance(value, bool), key, value, "a number")
    return float(value)


def _learning_rate(lr: Any, weight_decay: float) -> Any:
    """optimizer.lr as a float, or "auto"; checked with weight_decay, which has the same range for every class.

    The schemas type lr as Any so that it may be auto, so OmegaConf no longer turns a quoted number
    ('1e-3', or YAML's 1e-3 without a dot) into a float as it does for a float field: done here.
    """
    if isinstance(lr, str) and lr != "auto":
        try:
            lr = float(lr)
        except ValueError:
            pass
    require(
        lr == "auto" or (isinstance(lr, (int, float)) and not isinstance(lr, bool) and 0.0 < lr < math.inf),
        "optimizer.lr",
        lr,
        "a number > 0, or auto (dlcli lr-find's suggestion, found first)",
    )
    require(0.0 <= weight_decay < math.inf, "optimizer.weight_decay", weight_decay, "a number >= 0")
    return lr


@dataclass
class SGDSettings:
    _target_: str = "torch.optim.SGD"
    lr: Any = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0  # coupled (added to the gradient), on weights only

    def __post_init__(self) -> None:
        self.lr = _learning_rate(self.lr, self.weight_decay)
        require(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "a number in [0, 1)")
        require(
            not self.nesterov or self.momentum > 0,
            "optimizer.nesterov",
            self.nesterov,
            "Nesterov needs optimizer.momentum > 0",
        )


@dataclass
class AdamSettings:
    _target_: str = "torch.optim.Adam"
    lr: Any = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0  # coupled (L2-style), on weights only

    def __post_init__(self) -> None:
        self.lr = _learning_rate(self.lr, self.weight_decay)
        require(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            "optimizer.betas",
            self.betas,
            "two numbers in [0, 1), e.g. [0.9,0.999]",
        )
        require(self.eps > 0, "optimizer.eps", self.eps, "a number > 0")


@dataclass
class AdamWSettings(AdamSettings):
    _target_: str = "torch.optim.AdamW"
    lr: Any = 2e-3
    weight_decay: float = 0.01  # decoupled, on weights only


@dataclass
class RMSpropSettings:
    _target_: str = "torch.optim.RMSprop"
    lr: Any = 1e-3
    alpha: float = 0.99
    momentum: float = 0.0
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self.lr = _learning_rate(self.lr, self.weight_decay)
        require(0.0 <= self.alpha < 1.0, "optimizer.alpha", self.alpha, "a number in [0, 1)")
        require(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "a number in [0, 1)")
        require(self.eps > 0, "optimizer.eps", self.eps, "a number > 0")


@dataclass
class AdagradSettings:
    _target_: str = "torch.optim.Adagrad"
    lr: Any = 0.01
    eps: float = 1e-10
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        self.lr = _learning_rate(self.lr, self.weight_decay)
        require(self.eps > 0, "optimizer.eps", self.eps, "a number > 0")


# --- learning-rate schedules: torch.optim.lr_scheduler classes -----------------------------------
# dlcli fills in what depends on the run (the number of steps, the peak lr) and steps each one
# at its `interval`: after every optimizer step, or after every epoch.


@dataclass
class CosineSettings:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"  # from optimizer.lr to eta_min over all steps
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        require(self.eta_min >= 0.0, "scheduler.eta_min", self.eta_min, "a number >= 0")


@dataclass
class OneCycleSettings:
    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"  # warm up to optimizer.lr, then anneal
    pct_start: float = 0.25

    def __post_init__(self) -> None:
        require(0.0 < self.pct_start < 1.0, "scheduler.pct_start", self.pct_start, "a number in (0, 1)")


@dataclass
class StepSettings:
    _target_: str = "torch.optim.lr_scheduler.StepLR"  # lr times gamma every step_size epochs
    step_size: int = 5
    gamma: float = 0.1

    def __post_init__(self) -> None:
        require(self.step_size >= 1, "scheduler.step_size", self.step_size, "an integer >= 1 (epochs)")
        require(0.0 < self.gamma <= 1.0, "scheduler.gamma", self.gamma, "a number in (0, 1]")


@dataclass
class PlateauSettings:
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"  # lr times factor when val loss stalls
    factor: float = 0.1
    patience: int = 2

    def __post_init__(self) -> None:
        require(0.0 < self.factor < 1.0, "scheduler.factor", self.factor, "a number in (0, 1)")
        require(self.patience >= 0, "scheduler.patience", self.patience, "an integer >= 0")


@dataclass
class EMASettings:
    # an exponential moving average of the weights (and BatchNorm's buffers), updated after every optimizer
    # step, e.g. 0.999; it is what is evaluated, kept as best.pt and exported. null: off
    decay: Optional[float] = None

    def __post_init__(self) -> None:
        require(
            self.decay is None or (isinstance(self.decay, float) and 0.0 < self.decay < 1.0),
            "trainer.ema.decay",
            self.decay,
            "a number in (0, 1), e.g. 0.999, or null for no averaging",
        )


@dataclass
class LRFindSettings:
    # the learning-rate range test (dlcli lr-find, optimizer.lr=auto): the lr grows exponentially
    # from `start` to `end` over `steps` optimizer steps, one batch each, and the test stops once
    # the smoothed loss exceeds `diverge` times its lowest
    start: float = 1e-7
    end: float = 10.0
    steps: int = 200
    smoothing: float = 0.95  # the loss's exponential moving average: the weight of the past
    diverge: float = 4.0

    def __post_init__(self) -> None:
        require(0 < self.start < math.inf, "trainer.lr_find.start", self.start, "a learning rate > 0, e.g. 1e-7")
        require(
            self.start < self.end < math.inf,
            "trainer.lr_find.end",
            self.end,
            f"a learning rate above trainer.lr_find.start={show(self.start)}, e.g. 10",
        )
        require(
            isinstance(self.steps, int) and 20 <= self.steps <= 100_000,
            "trainer.lr_find.steps",
            self.steps,
            "an integer in [20, 100000]: optimizer steps, one batch each",
        )
        require(0 <= self.smoothing < 1, "trainer.lr_find.smoothing", self.smoothing, "a number in [0, 1)")
        require(self.diverge > 1, "trainer.lr_find.diverge", self.diverge, "a number > 1, e.g. 4")


@dataclass
class SWASettings:
    # stochastic weight averaging: from epoch `start` on, the lr moves to `lr` over `anneal_epochs`
    # epochs (torch's SWALR, in place of the scheduler) and each epoch's end adds the weights to an
    # equal average, whose BatchNorm statistics are then recomputed over the training split; that
    # average is what is evaluated, kept as best.pt and exported. null: off
    start: Optional[int] = None
    lr: Optional[float] = None  # the learning rate SWA trains at, e.g. a fraction of optimizer.lr
    anneal_epochs: int = 1

    def __post_init__(self) -> None:
        require(
            self.start is None or (isinstance(self.start, int) and self.start >= 1),
            "trainer.swa.start",
            self.start,
            "the first epoch to average (an integer >= 1), or null for no averaging",
        )
        if self.start is not None:
            require(
                isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and 0 < self.lr < math.inf,
                "trainer.swa.lr",
                self.lr,
                "the learning rate SWA trains at from trainer.swa.start, a number > 0, e.g. 0.01",
            )
        require(
            isinstance(self.anneal_epochs, int) and 0 <= self.anneal_epochs <= 100_000,
            "trainer.swa.anneal_epochs",
            self.anneal_epochs,
            "an integer >= 0: the epochs over which the lr moves to trainer.swa.lr (0: at once)",
        )


@dataclass
class EarlyStoppingSettings:
    patience: Optional[int] = None  # stop after this many epochs without improvement of trainer.monitor; null: off
    min_delta: float = 0.0  # an improvement must be larger than this (0.001: a tenth of a percent of accuracy)

    def __post_init__(self) -> None:
        require(
            self.patience is None or self.patience >= 1,
            "trainer.early_stopping.patience",
            self.patience,
            "null (off) or an integer >= 1: epochs without improvement before training stops",
        )
        require(self.min_delta >= 0, "trainer.early_stopping.min_delta", self.min_delta, "a number >= 0")


@dataclass
class TrainerSettings:
    epochs: int = 10
    batch_size: int = 128  # the samples of one optimizer step, over all processes
    accumulate: int = (
        1  # split each batch into this many micro-batches, their gradients summed: batch_size's memory / K
    )
    eval_batch_size: int = 1000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = the cores, shared out among parallel sweep jobs
    progress: bool = True  # progress bar (also off when output is not a terminal)
    val_fraction: float = 0.1  # carved from the training set, fixed by the seed
    monitor: str = "val_acc"  # best.pt is chosen by: val_acc | val_loss
    log_every: int = 50  # steps between progress/NaN checks (each one syncs with the device)
    resume: Optional[str] = None  # PATH to a checkpoint, or auto for this run folder's checkpoints/last.pt
    checkpoint_every_steps: int = 0  # also save last.pt every N optimizer steps (0: only at each epoch's end)
    grad_clip: Optional[float] = None  # clip the gradient norm to this value before each step
    precision: Any = 32  # 32 | bf16 | fp16: mixed precision via autocast on CUDA (fp16 adds loss scaling)
    compile: bool = False  # torch.compile the model (pays a compile once, then runs faster kernels)
    channels_last: bool = True  # NHWC memory layout for CNNs on CUDA (faster convolutions on tensor cores)
    diagnostics: bool = False  # per layer and epoch: gradient and weight norms, update ratio, dead units
    profile: bool = False  # a torch.profiler trace of a few steps after warm-up, and its top operators
    devices: int = 1  # processes to train in (data parallel): one per GPU, or CPU processes with device=cpu
    dist_timeout: float = 300.0  # seconds that processes of a multi-process run wait for each other
    early_stopping: EarlyStoppingSettings = field(default_factory=EarlyStoppingSettings)
    ema: EMASettings = field(default_factory=EMASettings)
    swa: SWASettings = field(default_factory=SWASettings)
    lr_find: LRFindSettings = field(default_factory=LRFindSettings)

    def __post_init__(self) -> None:
        self.precision = str(self.precision)
        _choice("trainer.precision", self.precision, ("32", "bf16", "fp16"))
        require(1 <= self.epochs <= 100_000, "trainer.epochs", self.epochs, "an integer in [1, 100000]")
        require(1 <= self.batch_size <= 1_000_000, "trainer.batch_size", self.batch_size, "an integer in [1, 1000000]")
        require(1 <= self.accumulate <= 1024, "trainer.accumulate", self.accumulate, "an integer in [1, 1024]")
        require(
            self.batch_size % self.accumulate == 0,
            "trainer.batch_size",
            self.batch_size,
            f"trainer.accumulate={self.accumulate} micro-batches must divide it; choose a batch_size that is a "
            f"multiple of {self.accumulate}, e.g. {self.batch_size - self.batch_size % self.accumulate or self.accumulate}",
        )
        require(
            1 <= self.eval_batch_size <= 1_000_000,
            "trainer.eval_batch_size",
            self.eval_batch_size,
            "an integer in [1, 1000000]",
        )
        device_ok = self.device in DEVICES[:-1] or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        require(device_ok, "trainer.device", self.device, f"{', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
        require(0 <= self.seed < 2**63, "trainer.seed", self.seed, "an integer >= 0")
        require(0 <= self.threads <= 1024, "trainer.threads", self.threads, "an integer >= 0 (0 = one per core)")
        require(
            0.0 < self.val_fraction < 1.0,
            "trainer.val_fraction",
            self.val_fraction,
            f"a fraction in (0, 1): {BEST} is chosen on the validation split",
        )
        _choice("trainer.monitor", self.monitor, MONITORS)
        require(self.log_every >= 1, "trainer.log_every", self.log_every, "an integer >= 1")
        require(
            self.checkpoint_every_steps >= 0,
            "trainer.checkpoint_every_steps",
            self.checkpoint_every_steps,
            "an integer >= 0 (0: only at the end of each epoch)",
        )
        require(
            self.grad_clip is None or self.grad_clip > 0,
            "trainer.grad_clip",
            self.grad_clip,
            "null (off) or a maximum gradient norm > 0",
        )
        require(
            1 <= self.devices <= 1024,
            "trainer.devices",
            self.devices,
            "an integer >= 1: the processes to train in, one per GPU (or CPU processes with trainer.device=cpu)",
        )
        require(
            self.batch_size >= self.devices,
            "trainer.batch_size",
            self.batch_size,
            f"at least trainer.devices={self.devices}: each process takes a share of every batch",
        )
        require(self.dist_timeout > 0, "trainer.dist_timeout", self.dist_timeout, "a number of seconds > 0")
        require(
            self.swa.start is None or self.swa.start <= self.epochs,
            "trainer.swa.start",
            self.swa.start,
            f"an epoch of the run's trainer.epochs={self.epochs}; averaging starts there",
        )
        require(
            self.swa.start is None or self.ema.decay is None,
            "trainer.swa.start",
            self.swa.start,
            "one average at a time: trainer.ema.decay is set as well; set one of them to null",
        )
        if self.resume not in (None, "auto"):
            existing_checkpoint(self.resume, "trainer.resume")


# --- experiment trackers (dlcli.loggers) ---------------------------------------------------------


@dataclass
class TensorBoardSettings:
    _target_: str = "dlcli.loggers.TensorBoard"
    log_dir: str = "tensorboard"  # inside the run folder


@dataclass
class MLflowSettings:
    _target_: str = "dlcli.loggers.MLflow"
    tracking_uri: str = "sqlite:///outputs/mlflow.db"  # a local file (no server); or http://host:5000, file:...
    experiment: str = "dlcli"
    artifacts: bool = True  # also store best.pt, summary.json and the pictures with the run

    def __post_init__(self) -> None:
        require(self.experiment.strip() != "", "logger.experiment", self.experiment, "a non-empty experiment name")
        require(
            "://" in self.tracking_uri or self.tracking_uri.startswith(("file:", "databricks")),
            "logger.tracking_uri",
            self.tracking_uri,
            "a URI: sqlite:///path/to/mlflow.db for a local file "
            "(sqlite:////abs/path with four slashes), http://host:5000 for a server, or file:/path",
        )


@dataclass
class WandbSettings:
    _target_: str = "dlcli.loggers.WandB"
    project: str = "dlcli"
    mode: str = "offline"  # offline (files in the run folder; `wandb sync` uploads them) | online | disabled
    entity: Optional[str] = None  # your W&B user or team (online)

    def __post_init__(self) -> None:
        _choice("logger.mode", self.mode, ("offline", "online", "disabled"))


@dataclass
class Custom:
    """A `_target_` dlcli has no schema for: its other keys are passed to it as they are."""

    _target_: str
    kwargs: dict


# group -> option -> schema: the ConfigStore entries, and how load_settings checks an option by its _target_
SCHEMAS: dict[str, dict[str, type]] = {
    "model": {
        "mlp": MLPSettings,
        "lenet": LeNetSettings,
        "alexnet": AlexNetSettings,
        "resnet": ResNetSettings,
        "rnn": RecurrentSettings,
    },
    "data": {
        "toy": ToyDataSettings,
        "mnist": ImageDataSettings,
        "fashion_mnist": FashionMNISTSettings,
        "cifar10": CIFAR10Settings,
        "image_folder": ImageFolderSettings,
        "csv": CSVSettings,
        "arrays": ArraysSettings,
    },
    "loss": {"cross_entropy": CrossEntropySettings, "nll": NLLSettings, "mse": MSESettings, "hinge": HingeSettings},
    "regularization": {"none": NoPenaltySettings, "l1": L1Settings, "l2": L2Settings, "elastic": ElasticSettings},
    "optimizer": {
        "sgd": SGDSettings,
        "adam": AdamSettings,
        "adamw": AdamWSettings,
        "rmsprop": RMSpropSettings,
        "adagrad": AdagradSettings,
    },
    "scheduler": {
        "cosine": CosineSettings,
        "onecycle": OneCycleSettings,
        "step": StepSettings,
        "plateau": PlateauSettings,
    },
    "trainer": {"default": TrainerSettings},
    "logger": {"tensorboard": TensorBoardSettings, "mlflow": MLflowSettings, "wandb": WandbSettings},
}
BY_TARGET = {
    g: {cls._target_: cls for cls in options.values() if hasattr(cls, "_target_")} for g, options in SCHEMAS.items()
}
# the torchvision sets share one target (ImageDataSettings stands for them): load_settings chooses their schema by name
BY_TARGET["data"] = {
    cls._target_: cls for cls in (ToyDataSettings, ImageDataSettings, ImageFolderSettings, CSVSettings, ArraysSettings)
}
IMAGE_SCHEMAS = {cls.name: cls for cls in (ImageDataSettings, FashionMNISTSettings, CIFAR10Settings)}


def store_schemas() -> None:
    """Put every schema in Hydra's ConfigStore as `schema/<group>/<option>`, for the YAML option to inherit
    (outside the group itself, so the schemas are not offered as choices of their own)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, options in SCHEMAS.items():
        for option, cls in options.items():
            store.store(group=f"schema/{group}", name=option, node=cls)


@dataclass
class Settings:
    model: Any  # a model schema or Custom
    data: Any
    loss: Any
    regularization: Any  # a penalty schema or Custom
    optimizer: Any
    scheduler: Any  # a schedule schema, Custom, or None for a constant lr
    trainer: TrainerSettings
    logger: Any = None  # a logger schema, Custom, or None (logger=none: metrics files only)


def load_settings(cfg: Any) -> Settings:
    """Turn a composed train config (DictConfig or plain dict) into checked `Settings`."""
    raw = _to_dict(cfg)
    for group in ("model", "data", "loss", "regularization", "optimizer", "scheduler", "trainer"):
        require(isinstance(raw.get(group), dict), group, raw.get(group), f"the config group '{group}' is missing")
    data = raw["data"]
    if data.get("_target_") == ImageDataSettings._target_:
        _choice("data.name", data.get("name"), IMAGE_SETS + TOY_SETS)
        if data["name"] in TOY_SETS:
            raise ConfigError(
                f"data.name={data['name']} is invalid here: data.name of an image dataset is fixed; "
                f"choose toy data with data=toy data.name={data['name']}"
            )
        data_schema = IMAGE_SCHEMAS[data["name"]]
    else:
        if data.get("_target_") == ToyDataSettings._target_ and data.get("name") in IMAGE_SETS:
            raise ConfigError(
                f"data.name={data['name']} is invalid here: data.name picks a toy set "
                f"({', '.join(TOY_SETS)}); choose a dataset with data={data['name']}"
            )
        data_schema = None
    return Settings(
        model=_spec("model", raw["model"]),
        data=build(data_schema, data, "data") if data_schema else _spec("data", data),
        loss=_spec("loss", raw["loss"]),
        regularization=_spec("regularization", raw["regularization"]),
        optimizer=_spec("optimizer", raw["optimizer"]),
        scheduler=_spec("scheduler", raw["scheduler"]) if raw["scheduler"].get("_target_") else None,
        trainer=build(TrainerSettings, raw["trainer"], "trainer"),
        # optional: the configs inside checkpoints of earlier versions have no logger
        logger=_spec("logger", raw["logger"]) if (raw.get("logger") or {}).get("_target_") else None,
    )


# what the custom option of each group takes, for the line that asks for one
TARGET_EXAMPLES = {
    "model": "my_nets.Net",
    "data": "my_data.load",
    "loss": "torch.nn.CrossEntropyLoss",
    "regularization": "my_penalties.GroupLasso",
    "optimizer": "torch.optim.NAdam",
    "scheduler": "torch.optim.lr_scheduler.ExponentialLR",
    "logger": "my_logs.Printer",
}


def _spec(group: str, section: dict) -> Any:
    """The checked schema of the option's `_target_`, or Custom for a target dlcli does not know."""
    target = section.get("_target_")
    example = f"{group}._target_={TARGET_EXAMPLES.get(group, 'my_nets.Net')}"
    if target == "???":
        raise ConfigError(f"{group}._target_ is required: the dotted path of what to build, e.g. {example}")
    require(
        isinstance(target, str) and target.strip() != "",
        f"{group}._target_",
        target,
        f"the dotted path of what to build, e.g. {example}",
    )
    schema = BY_TARGET.get(group, {}).get(target)
    if schema is None:
        kwargs = {k: v for k, v in section.items() if k != "_target_"}
        if group == "optimizer":  # whatever the class, these two mean the same and have the same range
            lr = _learning_rate(
                kwargs.get("lr", 1.0), _number(kwargs.get("weight_decay", 0.0), "optimizer.weight_decay")
            )
            if "lr" in kwargs:
                kwargs["lr"] = lr
        return Custom(target, kwargs)
    return build(schema, section, group)


def target_of(spec: Any) -> str:
    return spec._target_


def kwargs_of(spec: Any) -> dict:
    """The keyword arguments a spec's target is called with (not Hydra's own keys such as _partial_)."""
    values = dict(spec.kwargs) if isinstance(spec, Custom) else dataclasses.asdict(spec)
    return {k: v for k, v in values.items() if not (k.startswith("_") and k.endswith("_"))}


def short_name(spec: Any) -> str:
    """For logs and titles: the option's name for dlcli's own targets, else the class name."""
    if getattr(spec, "name", None) and not isinstance(spec, Custom):
        return spec.name
    if isinstance(spec, RecurrentSettings):
        return spec.cell  # rnn, lstm or gru
    for group in SCHEMAS.values():
        for option, cls in group.items():
            if cls is type(spec):
                return option
    return target_of(spec).rsplit(".", 1)[-1]


def allow_list(value: Any) -> list[str]:
    """The modules of `allow=` (a list, or one name) as strings."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if value is not None else []


def leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf, through dicts and lists."""
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{prefix}{key}.")]
    if isinstance(node, (list, tuple)):
        return [leaf for i, value in enumerate(node) for leaf in leaves(value, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), node)]


def _to_dict(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key} could not be resolved: {first_line(exc)}") from None


def build(cls: type, section: dict, prefix: str) -> Any:
    """Construct dataclass `cls` from a config section, checking keys and field types.

    A key the section lacks takes the schema's default: the built-in option's value.
    """
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    unknown = sorted(set(section) - set(names) - {"_partial_", "_convert_", "_recursive_"})
    if unknown:
        near = difflib.get_close_matches(unknown[0], names, n=1)
        require(
            False,
            f"{prefix}.{unknown[0]}",
            section[unknown[0]],
            (f"did you mean {prefix}.{near[0]}? " if near else "")
            + f"not a key of this {prefix} option; its keys: {', '.join(n for n in names if n != '_target_')}",
        )
    values = {
        name: _coerce(f"{prefix}.{name}", section[name], hints[name])
        for name in names
        if name in section and section[name] != "???"
    }
    return cls(**values)


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Return value as type `hint`, or raise a ConfigError naming the key."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        words = " or ".join(_describe(option) for option in typing.get_args(hint))
        raise ConfigError(f"{key}={show(value)} is invalid: expected {words}")
    if dataclasses.is_dataclass(hint):  # a nested section, e.g. trainer.early_stopping
        require(isinstance(value, dict), key, value, f"a section with the keys {', '.join(_field_names(hint))}")
        return build(hint, value, key)
    if origin is list:
        (item,) = typing.get_args(hint)
        require(isinstance(value, (list, tuple)), key, value, f"expected {_describe(hint)}")
        return [_coerce(key, v, item) for v in value]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        require(ok, key, value, "expected a finite number")
        return float(value)
    if hint is int:
        require(_is_int(value), key, value, "expected an integer")
        return value
    if hint is type(None):
        require(value is None, key, value, "expected null")
        return None
    require(isinstance(value, hint), key, value, f"expected {_describe(hint)}")
    return value


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    return _TYPE_WORDS.get(hint, str(hint))


def composition_error(exc: BaseException) -> str | None:
    """dlcli's line for a value Hydra's typed schemas refused while composing (optimizer.lr=fast)."""
    from omegaconf.errors import ValidationError

    cause = exc.__cause__ if isinstance(exc.__cause__, ValidationError) else exc
    key = getattr(cause, "full_key", None)
    if not isinstance(cause, ValidationError) or not key:
        return None
    text = str(exc).split("override ", 1)[-1].splitlines()[0] if "override " in str(exc) else ""
    value: Any = text.partition("=")[2] if text.startswith(f"{key}=") else getattr(cause, "value", "?")
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        value = OverridesParser.create().parse_override(f"{key}={value}").value()
    except Exception:  # keep the text as typed
        pass
    message = str(cause)
    if "is not a subclass of" in message:  # a whole section given one value
        section = globals().get(message.split("is not a subclass of", 1)[1].split(".")[0].strip())
        keys = _field_names(section) if dataclasses.is_dataclass(section) else ["<key>"]
        return (
            f"{key}={show(value)} is invalid: {key} is a section of keys ({', '.join(keys)}); set one, e.g. "
            f"{key}.{keys[0]}=..."
        )
    wanted = next(
        (
            words
            for name, words in (
                ("Integer", "an integer"),
                ("Float", "a finite number"),
                ("Boolean", "true or false"),
                ("bool", "true or false"),
                ("String", "a string"),
            )
            if name in message
        ),
        "another type",
    )
    return f"{key}={show(value)} is invalid: expected {wanted}"


store_schemas()  # Hydra composes from the ConfigStore: every command that reads settings composes after this
