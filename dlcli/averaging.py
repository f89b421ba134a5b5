"""Averages of the weights, through torch.optim.swa_utils: an exponential moving average updated
after every optimizer step (trainer.ema), or stochastic weight averaging, an equal average of the
weights at the end of each epoch from trainer.swa.start on, trained at its own learning rate
(trainer.swa). Once it holds weights, the average is the model the trainer evaluates and keeps.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from dlcli.errors import CheckpointError
from dlcli.settings import TrainerSettings


@dataclass
class Average:
    model: AveragedModel
    start: int | None = None  # SWA: the first epoch averaged; None: an EMA, updated at every step
    scheduler: SWALR | None = None  # SWA: the lr from epoch `start` on, in place of the run's scheduler

    def after_step(self, trained: nn.Module) -> None:
        if self.start is None:
            self.model.update_parameters(trained)

    def after_epoch(self, trained: nn.Module, epoch: int, train_inputs: Callable[[], Iterable[torch.Tensor]]) -> None:
        """SWA adds the epoch's weights, then recomputes BatchNorm's statistics for the new average
        (the averaged weights' own, which no training step has seen), over the whole training split."""
        if self.start is not None and epoch >= self.start:
            self.model.update_parameters(trained)
            update_bn(train_inputs(), self.model)

    def holds(self, epoch: int) -> bool:
        """Whether the average is the model of `epoch` (SWA's starts at its first epoch)."""
        return self.start is None or epoch >= self.start

    def sets_lr(self, epoch: int) -> bool:
        """Whether SWA's lr, not the run's scheduler, is the one epoch `epoch` trains at: SWALR steps
        as each such epoch begins."""
        return self.scheduler is not None and epoch >= self.start

    @property
    def kind(self) -> str:
        return "ema" if self.start is None else "swa"

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model.state_dict(),
            "scheduler": self.scheduler and self.scheduler.state_dict(),
        }

    def load_state_dict(self, saved: dict) -> None:
        if saved.get("kind", "ema") != self.kind:
            raise CheckpointError(
                f"the checkpoint averages its weights by trainer.{saved.get('kind')}, not this run's "
                f"trainer.{self.kind}; resume with the average it was trained with"
            )
        self.model.load_state_dict(saved["model"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])


def build_average(t: TrainerSettings, model: nn.Module, optimizer: torch.optim.Optimizer) -> Average | None:
    """trainer.ema or trainer.swa (the settings allow one of them), or None."""
    if t.ema.decay is not None:
        # use_buffers: BatchNorm's running statistics are averaged alike, so they match the weights
        return Average(AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema.decay), use_buffers=True))
    if t.swa.start is not None:
        planned = [group["lr"] for group in optimizer.param_groups]
        swalr = SWALR(optimizer, swa_lr=float(t.swa.lr), anneal_epochs=t.swa.anneal_epochs)
        for group, lr in zip(optimizer.param_groups, planned):  # SWALR sets its first lr at once (anneal_epochs=0):
            group["lr"] = lr  # the epochs before trainer.swa.start train at the run's own
        return Average(AveragedModel(model), start=t.swa.start, scheduler=swalr)
    return None
