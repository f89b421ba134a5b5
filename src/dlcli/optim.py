"""Optimizer and learning-rate schedule builders, one per `optimizer=` / `scheduler=` choice."""

import torch
from torch import nn

from dlcli.regularization import penalized_weights


def build_optimizer(settings, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer's own weight decay applies to weights only, like the penalty."""
    decay = penalized_weights(model)
    decay_ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    s = settings
    # on a GPU one fused kernel updates every parameter instead of a few launches per tensor
    fused = all(p.is_cuda for p in model.parameters())
    if s.name == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, fused=fused or None)
    if s.name in ("adam", "adamw"):
        cls = torch.optim.Adam if s.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=s.lr, betas=tuple(s.betas), eps=s.eps, fused=fused or None)
    if s.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=s.lr, alpha=s.alpha, momentum=s.momentum, eps=s.eps)
    return torch.optim.Adagrad(groups, lr=s.lr, eps=s.eps)


class Schedule:
    """A torch LR scheduler and when it steps: after every batch, or after every epoch."""

    def __init__(self, scheduler, per_step: bool, needs_metric: bool = False):
        self.scheduler = scheduler
        self.per_step = per_step
        self.needs_metric = needs_metric

    def after_step(self) -> None:
        if self.scheduler is not None and self.per_step:
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.scheduler is None or self.per_step:
            return
        self.scheduler.step(val_loss) if self.needs_metric else self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def build_schedule(settings, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    s, sched = settings, torch.optim.lr_scheduler
    total = max(1, epochs * steps_per_epoch)
    if s.name == "none":
        return Schedule(None, per_step=False)
    if s.name == "step":
        return Schedule(sched.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma), per_step=False)
    if s.name == "cosine":
        return Schedule(sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=s.min_lr), per_step=True)
    if s.name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        # cycling momentum would switch it on for plain SGD and breaks optimizers without one
        cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
        return Schedule(sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=s.pct_start,
                                         cycle_momentum=cycle), per_step=True)
    return Schedule(sched.ReduceLROnPlateau(optimizer, factor=s.factor, patience=s.patience),
                    per_step=False, needs_metric=True)
