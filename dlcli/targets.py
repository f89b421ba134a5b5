"""What the config inside a checkpoint may build: dlcli eval, predict and export rebuild from it, and
a checkpoint is someone else's data.

Each group's `_target_` builds only what the group is for: one of dlcli's own options, named
exactly (not by the `dlcli.` prefix, under which dlcli.files.write_json sits too), or a torch class
of the group's kind, found by importing along its path (never calling it). Hydra builds a
`_target_` wherever it sits, so one anywhere else in the config, nested in a model's keys or at
the top of the config, is refused unless the user allows its module with `allow=`.
"""

import types
from typing import Any

import torch
from torch import nn

from dlcli.errors import ConfigError
from dlcli.machine import import_target
from dlcli.regularization import Penalty
from dlcli.settings import BY_TARGET, leaves

# the options of dlcli's own that a checkpoint may name, per group: exactly the targets of the
# schemas of configs/model, configs/loss, configs/regularization and configs/data; optimizers and
# schedules are torch's
BUILDABLE: dict[str, tuple[str, ...]] = {
    **{group: tuple(BY_TARGET[group]) for group in ("model", "loss", "regularization", "data")},
    "optimizer": (),
    "scheduler": (),
}
# ReduceLROnPlateau subclasses LRScheduler only from torch 2.2 on
SCHEDULERS = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
# group -> (what it builds; what that must be, in words; the torch package it may come from; the
# classes it must subclass, none for data, whose loaders are functions)
KINDS: dict[str, tuple[str, str, str | None, tuple[type, ...]]] = {
    "model": ("a model", "a torch.nn.Module class", "torch.nn", (nn.Module,)),
    "loss": ("a loss", "a torch.nn.Module class", "torch.nn", (nn.Module,)),
    "regularization": ("a penalty", "a dlcli.regularization.Penalty class", None, (Penalty,)),
    "optimizer": ("an optimizer", "a torch.optim.Optimizer class", "torch.optim", (torch.optim.Optimizer,)),
    "scheduler": ("a schedule", "a torch.optim.lr_scheduler class", "torch.optim", SCHEDULERS),
    "data": ("a data loader", "a function that returns dlcli.data.Loaded", None, ()),
}


def check_targets(config: dict, allow: list[str], where: str) -> None:
    """Refuse, in one line, a config that would build anything its groups are not for, before anything
    is built. A stored config holds resolved values, so an interpolation (which Hydra would resolve
    while building) is refused too."""
    allow = tuple(allow)
    try:
        strings = [(key, value) for key, value in leaves(config) if isinstance(value, str)]
        targets = _targets(config)
    except RecursionError:
        raise ConfigError(
            f"{where} was refused: its config is nested deeper than any config dlcli writes; use a "
            "checkpoint that dlcli train wrote"
        ) from None
    for key, value in strings:
        if "${" in value:
            raise ConfigError(
                f"{where} was refused: its config holds an interpolation at {key} ({value!r}); "
                "dlcli writes resolved configs, so this checkpoint was altered"
            )
    for path, target in targets:
        if len(path) == 1 and path[0] in KINDS:
            _check_group(path[0], target, allow, where)
        else:
            _check_nested(path, target, allow, where)
    for group in KINDS:
        if isinstance(config.get(group), dict) and "_args_" in config[group]:
            raise ConfigError(
                f"{where} was refused: its config passes {group}._args_, positional arguments that "
                f"dlcli never writes (it calls {group}._target_ with keywords); use a checkpoint that "
                "dlcli train wrote"
            )


def _check_group(group: str, target: Any, allow: tuple[str, ...], where: str) -> None:
    if target is None:  # builds nothing: a constant lr, say
        return
    key = f"{group}._target_"
    noun, words, package, bases = KINDS[group]
    homes = (package, *allow) if package else allow
    _dotted(key, target, where)
    if target in BUILDABLE[group]:
        return
    if not _within(target, homes):
        own = ", ".join(BUILDABLE[group])
        allowed = " or ".join(
            part
            for part in (
                f"one of dlcli's ({own})" if own else "",
                f"{words} from {package}" if package else "",
                f"from {', '.join(allow)} (allow=)" if allow else "",
            )
            if part
        )
        raise ConfigError(
            f"{where} was refused: its config builds {key}={target!r}, which is not {noun} dlcli "
            f"rebuilds: {noun} is {allowed}; if it is {words} of your own that you trust, allow its "
            f"module: allow=[{_module_of(target)}]"
        )
    found = _find(target, key, where)
    home = _home(found)
    if not _within(home, homes):
        raise ConfigError(
            f"{where} was refused: its config builds {key}={target!r}, which leads to something "
            f"defined in {home}, outside {', '.join(homes)}; name it where it is defined, and allow "
            "that module if you trust it"
        )
    fits = (isinstance(found, type) and issubclass(found, bases)) if bases else callable(found)
    if not fits:
        what = f"the class {found.__name__}" if isinstance(found, type) else f"a {type(found).__name__}"
        raise ConfigError(
            f"{where} was refused: its config builds {key}={target!r}, which is {what}, not {words}; {noun} must be one"
        )


def _check_nested(path: tuple[str, ...], target: Any, allow: tuple[str, ...], where: str) -> None:
    key = ".".join((*path, "_target_"))
    place = (
        f"nested in {path[0]}, where Hydra would build it while building {path[0]}"
        if len(path) > 1
        else f"in {path[0]}, which builds nothing"
        if path
        else "at the top of the config, which builds nothing"
    )
    _dotted(key, target, where)
    if not _within(target, allow):
        raise ConfigError(
            f"{where} was refused: its config builds {key}={target!r} {place}; a checkpoint's config "
            "builds such objects only from modules you allow: if you trust it, allow its module: "
            f"allow=[{_module_of(target)}]"
        )
    home = _home(_find(target, key, where))
    if not _within(home, allow):
        raise ConfigError(
            f"{where} was refused: its config builds {key}={target!r}, which leads to something "
            f"defined in {home}, outside {', '.join(allow)}; name it where it is defined, and allow "
            "that module if you trust it"
        )


def _find(target: str, key: str, where: str) -> Any:
    """What `target` names, found by importing along its path (only under modules already judged
    allowed), never calling it: the lookup dlcli builds with, so the check finds what building would."""
    return import_target(
        target,
        f"{where}: its config builds {key}",
        "run dlcli from the folder that holds its module, or put that folder on PYTHONPATH",
    )


def _targets(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(path of every section holding a `_target_` key, its value), through dicts and lists, as Hydra
    looks for them."""
    found = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append((path, node["_target_"]))
        for key, value in node.items():
            found += _targets(value, (*path, str(key)))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += _targets(value, (*path, str(i)))
    return found


def _dotted(key: str, target: Any, where: str) -> None:
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(
            f"{where} was refused: its config builds {key}={target!r}, which is not the dotted path "
            "of a class or function; use a checkpoint that dlcli train wrote"
        )


def _within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def _module_of(target: str) -> str:
    return target.rpartition(".")[0] or target


def _home(found: Any) -> str:
    """The module that defines what a target found: `dlcli.commands.guard.os.system` reads as dlcli's and is os's."""
    home = found.__name__ if isinstance(found, types.ModuleType) else getattr(found, "__module__", None)
    return home if isinstance(home, str) else repr(home)
