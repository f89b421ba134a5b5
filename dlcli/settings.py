"""Validated settings: where a composed Hydra config becomes typed values, or one clear error.

Config flows one way: Hydra config -> `load_settings` -> builders -> trainer. Each config
group option has one frozen dataclass here; its field types are checked on load and its
`__post_init__` checks ranges, so a bad value fails before any work starts. This module
does not import torch, so checking a config is cheap.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from dlcli.errors import ConfigError

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal")
POOLINGS = ("max", "avg", "lp")
TOY_SETS = ("spirals", "moons", "circles", "xor")
IMAGE_SETS = ("mnist", "fashion_mnist", "cifar10")
MONITORS = ("val_acc", "val_loss")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise the one-line error `key=value is invalid: allowed` unless ok."""
    if not ok:
        raise ConfigError(f"{key}={_show(value)} is invalid: {allowed}")


def _show(value: Any) -> str:
    """The value as a user would type it: 'text', 1e-05, [64, 32]."""
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _choice(key: str, value: str, options: tuple[str, ...]) -> None:
    require(value in options, key, value, "choose one of " + ", ".join(options))


def existing_checkpoint(path: str, key: str) -> "Path":
    """The checkpoint file at `path`, or the one-line error a missing file or a folder deserves."""
    from pathlib import Path

    where = Path(path).expanduser()
    if not where.is_file():
        what = "is a folder" if where.is_dir() else "does not exist"
        raise ConfigError(f"{key}: {where} {what}; pass the checkpoint .pt file, e.g. "
                          f"{key}=outputs/<run>/checkpoints/best.pt")
    return where


# --- one dataclass per config group option -------------------------------------------


@dataclass(frozen=True)
class MLPSettings:
    name: str
    depth: int = 2
    width: Union[int, list[int]] = 512
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    init: str = "default"

    def __post_init__(self) -> None:
        require(0 <= self.depth <= 1000, "model.depth", self.depth, "an integer in [0, 1000] (0 is softmax regression)")
        if isinstance(self.width, list):
            require(
                len(self.width) == self.depth,
                "model.width",
                self.width,
                f"a list needs one width per hidden layer ({self.depth}, model.depth), or give one int",
            )
            for w in self.width:
                require(0 < w <= 65536, "model.width", self.width, "every width must be an integer in [1, 65536]")
        else:
            require(0 < self.width <= 65536, "model.width", self.width, "an integer in [1, 65536], or a list of them")
        _choice("model.activation", self.activation, ACTIVATIONS)
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a probability in [0, 1)")
        _choice("model.init", self.init, INITS)

    @property
    def widths(self) -> list[int]:
        return list(self.width) if isinstance(self.width, list) else [self.width] * self.depth


@dataclass(frozen=True)
class LeNetSettings:
    name: str
    activation: str = "relu"
    pooling: str = "max"

    def __post_init__(self) -> None:
        _choice("model.activation", self.activation, ACTIVATIONS)
        _choice("model.pooling", self.pooling, POOLINGS)


@dataclass(frozen=True)
class AlexNetSettings:
    name: str
    width: float = 0.25
    dropout: float = 0.5

    def __post_init__(self) -> None:
        require(0.0 < self.width <= 4.0, "model.width", self.width, "a multiplier in (0, 4]")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "a probability in [0, 1)")


@dataclass(frozen=True)
class ToyDataSettings:
    name: str
    n_samples: int = 6000
    noise: float = 0.1
    classes: Union[int, None] = None

    def __post_init__(self) -> None:
        require(100 <= self.n_samples <= 10_000_000, "data.n_samples", self.n_samples, "an integer in [100, 10000000]")
        require(0.0 <= self.noise <= 10.0, "data.noise", self.noise, "a number in [0, 10]")
        if self.classes is not None:
            require(self.name == "spirals", "data.classes", self.classes, f"{self.name} always has 2 classes; leave it null")
            require(2 <= self.classes <= 20, "data.classes", self.classes, "an integer in [2, 20]")

    @property
    def num_classes(self) -> int:
        return self.classes or (3 if self.name == "spirals" else 2)


@dataclass(frozen=True)
class ImageDataSettings:
    name: str
    root: str = "data"
    download: bool = True
    mean: list[float] = dataclasses.field(default_factory=list)
    std: list[float] = dataclasses.field(default_factory=list)
    subset: Union[int, None] = None
    augment: bool = False
    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        require(0 <= self.crop_padding <= 16, "data.crop_padding", self.crop_padding, "an integer in [0, 16] (pixels)")
        require(self.subset is None or self.subset >= 10, "data.subset", self.subset,
                "null (all training images) or an integer >= 10")
        require(bool(self.root), "data.root", self.root, "a folder path (or set DLCLI_DATA)")
        channels = 3 if self.name == "cifar10" else 1
        require(len(self.mean) == channels, "data.mean", self.mean, f"one value per channel ({channels})")
        require(len(self.std) == channels and all(s > 0 for s in self.std), "data.std", self.std,
                f"one value > 0 per channel ({channels})")


@dataclass(frozen=True)
class LossSettings:
    name: str
    margin: float = 1.0

    def __post_init__(self) -> None:
        _choice("loss.name", self.name, ("cross_entropy", "nll", "mse", "hinge"))
        require(self.margin > 0, "loss.margin", self.margin, "a number > 0")


@dataclass(frozen=True)
class RegularizationSettings:
    name: str
    strength: float = 0.0
    l1_ratio: float = 0.5

    def __post_init__(self) -> None:
        _choice("regularization.name", self.name, ("none", "l2", "l1", "elastic"))
        require(0.0 <= self.strength < math.inf, "regularization.strength", self.strength, "a number >= 0")
        require(0.0 <= self.l1_ratio <= 1.0, "regularization.l1_ratio", self.l1_ratio, "a number in [0, 1]")


def _check_lr_and_decay(lr: float, weight_decay: float) -> None:
    require(0.0 < lr < math.inf, "optimizer.lr", lr, "a number > 0")
    require(0.0 <= weight_decay < math.inf, "optimizer.weight_decay", weight_decay, "a number >= 0")


def _check_betas(betas: list[float]) -> None:
    require(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), "optimizer.betas", betas,
            "two numbers in [0, 1), e.g. [0.9,0.999]")


@dataclass(frozen=True)
class SGDSettings:
    name: str
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_lr_and_decay(self.lr, self.weight_decay)
        require(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "a number in [0, 1)")
        require(not self.nesterov or self.momentum > 0, "optimizer.nesterov", self.nesterov,
                "Nesterov needs optimizer.momentum > 0")


@dataclass(frozen=True)
class AdamSettings:
    name: str
    lr: float = 1e-3
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_lr_and_decay(self.lr, self.weight_decay)
        _check_betas(self.betas)
        require(self.eps > 0, "optimizer.eps", self.eps, "a number > 0")


@dataclass(frozen=True)
class RMSpropSettings:
    name: str
    lr: float = 1e-3
    alpha: float = 0.99
    momentum: float = 0.0
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_lr_and_decay(self.lr, self.weight_decay)
        require(0.0 <= self.alpha < 1.0, "optimizer.alpha", self.alpha, "a number in [0, 1)")
        require(0.0 <= self.momentum < 1.0, "optimizer.momentum", self.momentum, "a number in [0, 1)")
        require(self.eps > 0, "optimizer.eps", self.eps, "a number > 0")


@dataclass(frozen=True)
class AdagradSettings:
    name: str
    lr: float = 0.01
    eps: float = 1e-10
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_lr_and_decay(self.lr, self.weight_decay)
        require(self.eps > 0, "optimizer.eps", self.eps, "a number > 0")


@dataclass(frozen=True)
class SchedulerSettings:
    name: str
    step_size: int = 5
    gamma: float = 0.1
    min_lr: float = 0.0
    pct_start: float = 0.25
    factor: float = 0.1
    patience: int = 2

    def __post_init__(self) -> None:
        _choice("scheduler.name", self.name, ("none", "step", "cosine", "onecycle", "plateau"))
        require(self.step_size >= 1, "scheduler.step_size", self.step_size, "an integer >= 1 (epochs)")
        require(0.0 < self.gamma <= 1.0, "scheduler.gamma", self.gamma, "a number in (0, 1]")
        require(self.min_lr >= 0.0, "scheduler.min_lr", self.min_lr, "a number >= 0")
        require(0.0 < self.pct_start < 1.0, "scheduler.pct_start", self.pct_start, "a number in (0, 1)")
        require(0.0 < self.factor < 1.0, "scheduler.factor", self.factor, "a number in (0, 1)")
        require(self.patience >= 0, "scheduler.patience", self.patience, "an integer >= 0")


@dataclass(frozen=True)
class TrainerSettings:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    device: str = "auto"
    seed: int = 0
    threads: int = 0
    progress: bool = True
    val_fraction: float = 0.1
    monitor: str = "val_acc"
    log_every: int = 50
    resume: Union[str, None] = None
    precision: Union[int, str] = 32
    compile: bool = False
    channels_last: bool = True
    diagnostics: bool = False
    checkpoint_every_steps: int = 0
    grad_clip: Union[float, None] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", str(self.precision))
        _choice("trainer.precision", self.precision, ("32", "bf16", "fp16"))
        require(1 <= self.epochs <= 100_000, "trainer.epochs", self.epochs, "an integer in [1, 100000]")
        require(1 <= self.batch_size <= 1_000_000, "trainer.batch_size", self.batch_size, "an integer in [1, 1000000]")
        require(1 <= self.eval_batch_size <= 1_000_000, "trainer.eval_batch_size", self.eval_batch_size,
                "an integer in [1, 1000000]")
        device_ok = self.device in ("auto", "cpu", "cuda") or (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        )
        require(device_ok, "trainer.device", self.device, "auto, cpu, cuda or cuda:N")
        require(0 <= self.seed < 2**63, "trainer.seed", self.seed, "an integer >= 0")
        require(0 <= self.threads <= 1024, "trainer.threads", self.threads, "an integer >= 0 (0 = one per core)")
        require(0.0 < self.val_fraction < 1.0, "trainer.val_fraction", self.val_fraction,
                "a fraction in (0, 1): best.pt is chosen on the validation split")
        _choice("trainer.monitor", self.monitor, MONITORS)
        require(self.log_every >= 1, "trainer.log_every", self.log_every, "an integer >= 1")
        require(self.checkpoint_every_steps >= 0, "trainer.checkpoint_every_steps", self.checkpoint_every_steps,
                "an integer >= 0 (0: only at the end of each epoch)")
        require(self.grad_clip is None or self.grad_clip > 0, "trainer.grad_clip", self.grad_clip,
                "null (off) or a maximum gradient norm > 0")
        if self.resume not in (None, "auto"):
            existing_checkpoint(self.resume, "trainer.resume")


MODELS = {"mlp": MLPSettings, "lenet": LeNetSettings, "alexnet": AlexNetSettings}
OPTIMIZERS = {"sgd": SGDSettings, "adam": AdamSettings, "adamw": AdamSettings, "rmsprop": RMSpropSettings,
              "adagrad": AdagradSettings}


@dataclass(frozen=True)
class Settings:
    model: Union[MLPSettings, LeNetSettings, AlexNetSettings]
    data: Union[ToyDataSettings, ImageDataSettings]
    loss: LossSettings
    regularization: RegularizationSettings
    optimizer: Union[SGDSettings, AdamSettings, RMSpropSettings, AdagradSettings]
    scheduler: SchedulerSettings
    trainer: TrainerSettings

    def __post_init__(self) -> None:
        if self.model.name != "mlp":
            require(isinstance(self.data, ImageDataSettings), "model", self.model.name,
                    f"a CNN needs image data, and data.name={self.data.name} is 2-D points; "
                    "use model=mlp, or data=mnist|fashion_mnist|cifar10")


def load_settings(cfg: Any) -> Settings:
    """Turn a composed train config (DictConfig or plain dict) into checked `Settings`."""
    raw = _to_dict(cfg)
    for group in ("model", "data", "loss", "regularization", "optimizer", "scheduler", "trainer"):
        require(isinstance(raw.get(group), dict), group, raw.get(group), f"the config group '{group}' is missing")
    data_name = raw["data"].get("name")
    _choice("data.name", data_name, TOY_SETS + IMAGE_SETS)
    toy_option = "n_samples" in raw["data"]  # which data= option was composed, whatever data.name says
    if toy_option and data_name in IMAGE_SETS:
        raise ConfigError(f"data.name={data_name} is invalid here: data.name picks a toy set ({', '.join(TOY_SETS)}); "
                          f"choose a dataset with data={data_name}")
    if not toy_option and data_name in TOY_SETS:
        raise ConfigError(f"data.name={data_name} is invalid here: data.name of an image dataset is fixed; "
                          f"choose toy data with data=toy data.name={data_name}")
    _choice("model.name", raw["model"].get("name"), tuple(MODELS))
    _choice("optimizer.name", raw["optimizer"].get("name"), tuple(OPTIMIZERS))
    return Settings(
        model=build(MODELS[raw["model"]["name"]], raw["model"], "model"),
        data=build(ToyDataSettings if data_name in TOY_SETS else ImageDataSettings, raw["data"], "data"),
        loss=build(LossSettings, raw["loss"], "loss"),
        regularization=build(RegularizationSettings, raw["regularization"], "regularization"),
        optimizer=build(OPTIMIZERS[raw["optimizer"]["name"]], raw["optimizer"], "optimizer"),
        scheduler=build(SchedulerSettings, raw["scheduler"], "scheduler"),
        trainer=build(TrainerSettings, raw["trainer"], "trainer"),
    )


def _to_dict(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return cfg
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key} could not be resolved: {str(exc).splitlines()[0]}") from None


def build(cls: type, section: dict, prefix: str) -> Any:
    """Construct dataclass `cls` from a config section, checking keys and field types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(section) - set(names))
    require(not unknown, f"{prefix}.{unknown[0]}" if unknown else prefix, section.get(unknown[0]) if unknown else None,
            f"not a key of this {prefix} option; allowed keys: {', '.join(names)}")
    values = {name: _coerce(f"{prefix}.{name}", section[name], hints[name]) for name in names if name in section}
    return cls(**values)


_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Return value as type `hint`, or raise a ConfigError naming the key."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        words = " or ".join(_describe(option) for option in typing.get_args(hint))
        raise ConfigError(f"{key}={_show(value)} is invalid: expected {words}")
    if origin is list:
        (item,) = typing.get_args(hint)
        require(isinstance(value, (list, tuple)), key, value, f"expected {_describe(hint)}")
        return [_coerce(key, v, item) for v in value]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        require(ok, key, value, "expected a finite number")
        return float(value)
    if hint is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, value, "expected an integer")
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
