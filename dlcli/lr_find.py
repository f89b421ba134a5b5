"""The learning-rate range test (Smith 2017, "Cyclical learning rates"): train with an lr that grows
exponentially, one batch per step, and read where the smoothed loss falls fastest.

It trains the model it is given; `optimizer.lr=auto` hands it a copy, under a forked random
generator, so the run that follows starts from the same weights and draws as without it.
"""

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlcli import plots
from dlcli.data import DataBundle, train_batches
from dlcli.errors import DivergedError
from dlcli.files import write_json
from dlcli.optim import build_optimizer, with_lr
from dlcli.regularization import Penalty, build_penalty
from dlcli.settings import LRFindSettings, Settings, short_name, target_of

SKIP = 10  # the first smoothed values lean on too few losses to have a slope worth reading


def range_test(
    optimizer_spec,
    model: nn.Module,
    data: DataBundle,
    loss_fn: nn.Module,
    penalty: Penalty,
    batch_size: int,
    seed: int,
    s: LRFindSettings,
) -> dict:
    """The lrs tried, their losses (raw and smoothed), why the test stopped and the suggested lr."""
    device = data.train.y.device
    optimizer = build_optimizer(with_lr(optimizer_spec, s.start), model, device)
    growth = (s.end / s.start) ** (1 / (s.steps - 1))
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=growth)
    epochs = itertools.count(1)
    batches = itertools.chain.from_iterable(
        train_batches(data, batch_size, torch.Generator().manual_seed(seed * 100_003 + epoch)) for epoch in epochs
    )
    model.train()
    lrs, losses, smoothed = [], [], []
    average, lowest, stopped = 0.0, math.inf, f"reached trainer.lr_find.end={s.end:g}"
    for step in range(s.steps):
        x, y, _ = next(batches)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        (loss + penalty() if penalty.active else loss).backward()
        optimizer.step()
        value = loss.item()  # read every step: the test must stop as soon as the loss blows up
        if not math.isfinite(value):
            stopped = f"the loss became {value} at lr {lrs[-1] if lrs else s.start:.3g}"
            break
        lrs.append(optimizer.param_groups[0]["lr"])
        average = s.smoothing * average + (1 - s.smoothing) * value
        smoothed.append(average / (1 - s.smoothing ** (step + 1)))  # bias-corrected, as Adam's moments
        losses.append(value)
        lowest = min(lowest, smoothed[-1])
        if smoothed[-1] > s.diverge * lowest:
            stopped = f"the smoothed loss passed trainer.lr_find.diverge={s.diverge:g} times its lowest"
            break
        schedule.step()
    return {
        "suggested_lr": suggest(lrs, smoothed),
        "steps": len(lrs),
        "stopped": stopped,
        "lr": lrs,
        "loss": losses,
        "smoothed_loss": smoothed,
    }


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The lr where the smoothed loss falls fastest against log(lr), before its lowest point."""
    lowest = int(np.argmin(smoothed)) if smoothed else 0
    if lowest - SKIP < 2:
        raise DivergedError(
            f"the range test's loss stopped falling within {lowest + 1} of its {len(lrs)} steps, too soon to read "
            "a slope; start lower (trainer.lr_find.start) or take more steps (trainer.lr_find.steps)"
        )
    slope = np.gradient(np.asarray(smoothed[: lowest + 1]), np.log(np.asarray(lrs[: lowest + 1])))
    return float(lrs[SKIP + int(np.argmin(slope[SKIP:]))])


def find_and_record(
    settings: Settings, model: nn.Module, data: DataBundle, loss_fn: nn.Module, run_dir: Path | None
) -> dict:
    """The range test of the configured optimizer on `model`, written to lr_find.json and lr_find.png
    (run_dir None: written by another process)."""
    t = settings.trainer
    penalty = build_penalty(settings.regularization, model)
    finding = range_test(settings.optimizer, model, data, loss_fn, penalty, t.batch_size, t.seed, t.lr_find)
    record = {
        "suggested_lr": finding["suggested_lr"],
        "rule": "the steepest fall of the smoothed loss against log(lr), before its lowest point",
        "optimizer": target_of(settings.optimizer),
        "model": short_name(settings.model),
        "data": short_name(settings.data),
        "batch_size": t.batch_size,
        "seed": t.seed,
        **finding,
    }
    if run_dir is not None:
        write_json(run_dir / "lr_find.json", record)
        title = f"{record['model']} on {record['data']}, {record['optimizer'].rsplit('.', 1)[-1]}: lr range test"
        plots.lr_range(record, run_dir / "lr_find.png", title)
    return record
