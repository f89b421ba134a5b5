"""Optimizers and learning-rate schedules: torch.optim and torch.optim.lr_scheduler, as the config names them.

dlcli adds what a config cannot say: the optimizer's weight decay applies to weights only (biases
and normalization parameters sit in a group with weight_decay 0, as the penalty leaves them alone;
frozen parameters are left out), fused kernels on CUDA where the class has them, and each schedule
gets the arguments that depend on the run (its length in steps, the peak lr) and is stepped at its
interval: after every optimizer step, or after every epoch.
"""

import dataclasses
import inspect
import logging

import torch
from torch import nn

from dlcli.errors import CheckpointError, ConfigError, first_line
from dlcli.machine import import_target
from dlcli.regularization import penalized_weights
from dlcli.settings import Custom, kwargs_of, target_of
from dlcli.targets import SCHEDULERS

log = logging.getLogger("dlcli")


def with_lr(spec, lr: float):
    """The optimizer's settings with another lr (optimizer.lr=auto's finding, or the range test's start)."""
    if isinstance(spec, Custom):
        return Custom(spec._target_, {**spec.kwargs, "lr": lr})
    return dataclasses.replace(spec, lr=lr)


def build_optimizer(spec, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    cls = _load_class(spec, "optimizer", torch.optim.Optimizer)
    kwargs = kwargs_of(spec)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = {id(p) for p in penalized_weights(model)}
    if "weight_decay" in kwargs:
        decay = kwargs.pop("weight_decay")
        groups = [
            {"params": [p for p in params if id(p) in weights], "weight_decay": decay},
            {"params": [p for p in params if id(p) not in weights], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": params}]
    accepts = inspect.signature(cls).parameters
    if device.type == "cuda" and "fused" in accepts and not {"fused", "foreach"} & set(kwargs):
        kwargs["fused"] = True  # one kernel for all parameters instead of a loop of them
    try:
        return cls(groups, **kwargs)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"optimizer._target_={target_of(spec)} refused its settings ({first_line(exc)}); "
            f"its keys: {', '.join(k for k in accepts if k != 'params')}"
        ) from None


# torch schedulers whose arguments depend on the run, and when dlcli steps them; any other
# torch.optim.lr_scheduler class is stepped once per epoch with the config's keys alone
RUN_ARGUMENTS = {
    "torch.optim.lr_scheduler.CosineAnnealingLR": ("step", lambda total, opt: {"T_max": total}),
    "torch.optim.lr_scheduler.OneCycleLR": (
        "step",
        lambda total, opt: {
            "max_lr": [g["lr"] for g in opt.param_groups],
            "total_steps": total,
            # cycle the momentum only where there is one (Adam's beta1; SGD and RMSprop's if > 0)
            "cycle_momentum": "betas" in opt.defaults or opt.defaults.get("momentum", 0) > 0,
        },
    ),
    "torch.optim.lr_scheduler.StepLR": ("epoch", lambda total, opt: {}),
    "torch.optim.lr_scheduler.ReduceLROnPlateau": ("epoch", lambda total, opt: {}),
}


class Schedule:
    """A torch lr scheduler, stepped at its interval; with no scheduler the lr stays as configured."""

    def __init__(self, scheduler=None, interval: str = "epoch", target: str | None = None):
        self.scheduler, self.interval, self.target = scheduler, interval, target

    def after_step(self) -> None:
        s = self.scheduler
        # a resumed run may go on past the planned length: one-cycle then stays at its last lr
        if self.interval == "step" and not (hasattr(s, "total_steps") and s.last_epoch >= s.total_steps):
            s.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.interval != "epoch" or self.scheduler is None:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"target": self.target, "state": self.scheduler.state_dict() if self.scheduler else None}

    def load_state_dict(self, saved: dict) -> None:
        """Continue the checkpoint's schedule: its lr and its length, whatever the config says now."""
        if saved.get("target") != self.target:
            raise CheckpointError(
                f"the checkpoint's lr schedule is {saved.get('target') or 'none'}, not this run's "
                f"{self.target or 'none'}; resume with the scheduler it was trained with"
            )
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["state"])


def build_schedule(spec, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    if spec is None:
        return Schedule()
    target = target_of(spec)
    cls = _load_class(spec, "scheduler", SCHEDULERS)  # what eval accepts from the checkpoint, too
    interval, run_arguments = RUN_ARGUMENTS.get(target, ("epoch", lambda total, opt: {}))
    kwargs = {**run_arguments(max(1, epochs * steps_per_epoch), optimizer), **kwargs_of(spec)}
    try:
        return Schedule(cls(optimizer, **kwargs), interval, target)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"scheduler._target_={target} refused its settings ({first_line(exc)})") from None


def optimizer_state(target: str, optimizer: torch.optim.Optimizer) -> dict:
    return {"target": target, "state": optimizer.state_dict()}


def load_optimizer_state(target: str, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    if saved.get("target") != target:
        raise CheckpointError(
            f"the checkpoint's optimizer is {saved.get('target')}, not this run's "
            f"{target}; resume with the optimizer it was trained with"
        )
    try:
        optimizer.load_state_dict(saved["state"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"the checkpoint's {target} state does not fit this run ({first_line(exc)}); "
            "resume with the settings it was trained with"
        ) from None


def _load_class(spec, group: str, base: type | tuple[type, ...]) -> type:
    target = target_of(spec)
    example = "torch.optim.NAdam" if group == "optimizer" else "torch.optim.lr_scheduler.ExponentialLR"
    cls = import_target(target, f"{group}._target_", f"name a class such as {example}")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        kind = "a torch.optim.Optimizer" if group == "optimizer" else "a torch.optim.lr_scheduler class"
        raise ConfigError(
            f"{group}._target_={target} is not {kind}; name a class such as "
            f"{'torch.optim.NAdam' if group == 'optimizer' else 'torch.optim.lr_scheduler.ExponentialLR'}"
        )
    return cls
