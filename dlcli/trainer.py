"""The training loop: forward, loss + penalty, backward, step; evaluate; checkpoint.

Per-step numbers (loss, correct predictions) stay on the device in a small window and are
read once every `log_every` steps, so a GPU never waits on the host inside the loop. With
several processes (dlcli.distributed) each trains on its share of every batch; the windows and
evaluation counts are summed over the processes, so all of them log, checkpoint and stop alike.
"""

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from dlcli import interrupts
from dlcli.averaging import Average
from dlcli.checkpoint import restore_rng_states, rng_states, save_checkpoint
from dlcli.data import DataBundle, batches_per_epoch, eval_batches, train_batches
from dlcli.diagnostics import GradientFlow
from dlcli.distributed import World
from dlcli.errors import DivergedError, Interrupted
from dlcli.files import write_metrics
from dlcli.layout import BEST, LAST, checkpoint_dir
from dlcli.loggers import Logger
from dlcli.machine import process_age
from dlcli.optim import Schedule, load_optimizer_state, optimizer_state
from dlcli.regularization import Penalty
from dlcli.settings import TrainerSettings

log = logging.getLogger("dlcli")


@dataclass
class Progress:
    """What a checkpoint needs beyond the weights to carry on exactly where it stopped."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_epoch: int = 0
    best_value: float | None = None
    history: list[dict] = field(default_factory=list)
    in_epoch: dict | None = None  # set while an epoch is under way: its next batch and running sums
    stop_reason: str | None = None  # why training ended before trainer.epochs (early stopping)

    @classmethod
    def saved(cls, state: dict) -> "Progress":
        """Where the run of a checkpoint stood."""
        return cls(
            epoch=state["epoch"],
            step=state["step"],
            best_epoch=state["best_epoch"],
            best_value=state["best_value"],
            history=list(state["metrics"]),
            in_epoch=state.get("in_epoch"),
        )

    def improved(self, monitor: str, value: float) -> bool:
        if self.best_value is None:
            return True
        return value > self.best_value if monitor.endswith("acc") else value < self.best_value


@dataclass
class Trainer:
    model: nn.Module
    data: DataBundle
    loss_fn: nn.Module
    penalty: Penalty
    optimizer: torch.optim.Optimizer
    optimizer_target: str  # the config's _target_, kept in checkpoints so a resume checks it
    schedule: Schedule
    settings: TrainerSettings
    run_dir: Path
    config: dict  # the resolved config, stored in every checkpoint
    progress: Progress = field(default_factory=Progress)
    startup_seconds: float | None = None  # process start to the end of the first optimizer step
    flow: "GradientFlow | None" = None  # per-layer gradient diagnostics, when trainer.diagnostics
    world: World = field(default_factory=World)  # this process among those of a multi-process run
    logger: Logger = field(default_factory=Logger)  # an experiment tracker (rank 0's; the others' do nothing)
    tracked: dict | None = None  # {target, id} of the tracked run, kept in checkpoints for a resume to continue
    average: Average | None = None  # trainer.ema or trainer.swa: the averaged weights
    mix: Any = None  # data.mixup / data.cutmix: (images, labels) -> (mixed images, soft labels), per batch
    profile: Any = None  # trainer.profile: a StepProfile, told of every optimizer step

    def __post_init__(self) -> None:
        device = self.data.train.y.device
        fp16 = self.settings.precision == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None  # fp16 gradients underflow unscaled
        self.stop = _StopFlag()  # fit() connects it to SIGINT/SIGTERM
        self.stopping: int | None = None  # the stop signal, once all processes know of it

    def autocast(self):
        return autocast(self.settings.precision, self.data.train.y.device)

    @property
    def checkpoint_dir(self) -> Path:
        return checkpoint_dir(self.run_dir)

    def fit(self) -> Progress:
        """Train to trainer.epochs. SIGINT/SIGTERM stop at the next step boundary with last.pt saved."""
        s = self.settings
        if self.world.main:
            write_metrics(self.run_dir, self.progress.history)  # a resumed run's files match its checkpoint
        with _stop_requests(escalate=self.world.size == 1) as stop:
            self.stop = stop
            for epoch in range(self.progress.epoch + 1, s.epochs + 1):
                self.progress.stop_reason = stalled(
                    self.progress.history, s.monitor, s.early_stopping.patience, s.early_stopping.min_delta
                )
                if self.progress.stop_reason:  # checked here, not after the epoch: a resumed run stops alike
                    log.info(f"early stopping after epoch {self.progress.epoch}: {self.progress.stop_reason}")
                    break
                started = time.perf_counter()
                if self.average is not None and self.average.sets_lr(epoch) and self.progress.in_epoch is None:
                    self.average.scheduler.step()  # not again in an epoch resumed halfway: its checkpoint has it
                train_loss, train_acc, trained = self.train_epoch(epoch)
                train_seconds = time.perf_counter() - started  # the epoch's last window read synced the device
                if self.flow is not None:
                    self.flow.record(epoch)
                if self.average is not None:  # SWA's update, with its BatchNorm pass, is the epoch's work
                    self.average.after_epoch(bare(self.model), epoch, self._train_inputs)
                val = evaluate(
                    self.network(epoch), self.data, "val", self.loss_fn, s.eval_batch_size, self.autocast, self.world
                )
                if self.average is None or not self.average.sets_lr(epoch):
                    self.schedule.after_epoch(val["loss"])
                seconds = time.perf_counter() - started
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "val_loss": val["loss"],
                    "val_acc": val["acc"],
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "epoch_seconds": round(seconds, 4),
                    "samples_per_second": round(trained / train_seconds, 1),
                }
                self.progress.epoch, self.progress.in_epoch = epoch, None
                self.progress.history.append(row)
                log.info(
                    f"epoch {epoch}/{s.epochs}  train loss {train_loss:.4f} acc {train_acc:.2%}  "
                    f"val loss {val['loss']:.4f} acc {val['acc']:.2%}  lr {row['lr']:.3g}  "
                    f"{seconds:.1f}s ({row['samples_per_second']:,.0f} train samples/s)"
                )
                if self.progress.improved(s.monitor, row[s.monitor]):
                    self.progress.best_value, self.progress.best_epoch = row[s.monitor], epoch
                    self.save(BEST)  # before last.pt: a kill in between redoes this epoch, same result
                self.save(LAST)
                if self.world.main:
                    write_metrics(self.run_dir, self.progress.history)
                    self.logger.log_epoch(row)
                if self.stopping:  # asked during the epoch's last window: it was worth finishing
                    raise Interrupted(self.stopping, epoch, self.progress.step)
            if not self.progress.best_epoch and self.progress.history:
                # resumed from another run's checkpoint with no epoch left to train: the weights it
                # resumed are this folder's best (and its last, for a resume of this folder)
                self.progress.best_epoch, self.progress.best_value = (
                    self.progress.epoch,
                    self.progress.history[-1][s.monitor],
                )
                self.save(BEST)
                self.save(LAST)
        return self.progress

    def network(self, epoch: int) -> nn.Module:
        """The model to evaluate and keep after `epoch`: the average once it holds weights; with
        several processes, without DistributedDataParallel, whose forward pass would wait on
        processes that have fewer batches of their share."""
        if self.average is not None and self.average.holds(epoch):
            return self.average.model.module
        return self.model if self.world.size == 1 else bare(self.model)

    def _train_inputs(self):
        """The whole training split's inputs in order, in every process alike (SWA's BatchNorm pass)."""
        return (x for x, _ in eval_batches(self.data, "train", self.settings.eval_batch_size))

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """The epoch's train loss and accuracy, and how many samples this call trained on (after a
        mid-epoch resume, fewer than the epoch holds: the rest were trained before the restart)."""
        s, model, p, world = self.settings, self.model, self.progress, self.world
        model.train()
        order = torch.Generator().manual_seed(s.seed * 100_003 + epoch)  # data order depends on (seed, epoch) only
        n_batches = batches_per_epoch(len(self.data.train), s.batch_size, world.size)
        device = self.data.train.y.device
        window_loss = torch.zeros(s.log_every, device=device, dtype=torch.float64)  # summed over the batch
        window_hits = torch.zeros(s.log_every, device=device, dtype=torch.float64)
        sizes: list[int] = []  # (global) batch sizes of the current window, known on the host
        part = p.in_epoch or {"batch": 0, "total_loss": 0.0, "total_hits": 0, "seen": 0}  # mid-epoch resume
        first, seen_before = part["batch"], part["seen"]
        bar = _progress_bar(n_batches, f"epoch {epoch}/{s.epochs}", s.progress, initial=first)

        def flush() -> int | None:
            """Read the window (the one host-device sync) into the epoch's totals; with several
            processes, sum it over them first. Returns the stop signal any process received."""
            nonlocal sizes
            k = len(sizes)
            window = world.sum_(torch.cat([window_loss[:k], window_hits[:k]])).tolist()
            losses = [total / n for total, n in zip(window[:k], sizes)]
            self._check_finite(losses, epoch)
            for total in window[:k]:  # one at a time: the same sums however windows fall
                part["total_loss"] += total
            part["total_hits"] += int(sum(window[k:]))
            part["seen"] += sum(sizes)
            bar.update(k)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{part['total_hits'] / part['seen']:.2%}")
            sizes = []
            self.stopping = world.any_signal(self.stop.signal, device)
            return self.stopping

        batches = train_batches(self.data, s.batch_size, order, start=first, shard=world.shard)
        for b, (x, y, n) in enumerate(batches, start=first):
            if self.mix is not None:  # the loss takes the soft labels; accuracy counts the dominant one
                x, y = self.mix(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            # trainer.accumulate: the batch in micro-batches, each loss weighed by its share of the batch,
            # so the summed gradients are the whole batch's; DDP all-reduces only with the last one
            micro = [(xm, ym) for xm, ym in zip(x.tensor_split(s.accumulate), y.tensor_split(s.accumulate)) if len(ym)]
            loss, hits = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
            for j, (xm, ym) in enumerate(micro):
                last = j == len(micro) - 1
                with contextlib.nullcontext() if last or world.size == 1 else model.no_sync():
                    with self.autocast():
                        zm = model(xm)
                        lm = self.loss_fn(zm, ym)
                    if len(micro) > 1:
                        lm = lm * (len(ym) / len(y))
                    if world.size > 1:  # DDP averages over processes: weigh each share by its size, so that
                        lm = lm * (len(y) * world.size / n)  # uneven shares give the global batch's mean
                    objective = lm + self.penalty() if self.penalty.active and last else lm
                    (objective if self.scaler is None else self.scaler.scale(objective)).backward()
                loss = loss + lm.detach()
                hits = hits + (zm.argmax(1) == (ym.argmax(1) if ym.ndim > 1 else ym)).sum()
            if self.scaler is None:
                self._clip()
                self.optimizer.step()
            else:
                self.scaler.unscale_(self.optimizer)
                self._clip()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            if self.average is not None:
                self.average.after_step(bare(self.model))
            if self.average is None or not self.average.sets_lr(epoch):
                self.schedule.after_step()
            if self.profile is not None:
                self.profile.step()
            p.step += 1
            if self.startup_seconds is None:
                self.startup_seconds = process_age()
            window_loss[len(sizes)] = loss.detach().double() * (n / world.size if world.size > 1 else len(y))
            window_hits[len(sizes)] = hits
            sizes.append(n)
            due = bool(s.checkpoint_every_steps) and p.step % s.checkpoint_every_steps == 0
            # one process stops as soon as it is asked; several agree on it when they sum a window
            stop = self.stop.signal if world.size == 1 else None
            if len(sizes) == s.log_every or b == n_batches - 1 or due or stop:
                stop = flush()
            if (due or stop) and b < n_batches - 1:
                p.in_epoch = {**part, "batch": b + 1}
                self.save(LAST)
                if stop:
                    bar.close()
                    raise Interrupted(stop, epoch, p.step)
        bar.close()
        p.in_epoch = None
        return part["total_loss"] / part["seen"], part["total_hits"] / part["seen"], part["seen"] - seen_before

    def _clip(self) -> None:
        if self.settings.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)

    def _check_finite(self, losses: list[float], epoch: int) -> None:
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                step = self.progress.step - len(losses) + i + 1
                before = [v for v in losses[:i] if math.isfinite(v)]
                last = f"{before[-1]:.4g}" if before else "none in this window"
                kept = self.checkpoint_dir / LAST
                kept_msg = f"the last good checkpoint {kept} is kept" if kept.exists() else "no checkpoint was written"
                raise DivergedError(
                    f"loss became {value} at epoch {epoch}, step {step} (last finite loss {last}); "
                    f"training stopped and {kept_msg}; try a smaller optimizer.lr"
                )

    def save(self, name: str) -> None:
        """Rank 0 writes the checkpoint; every process must call this, as it gathers their RNG states."""
        p = self.progress
        rngs = self.world.gather(rng_states(self.data.train.y.device))
        if not self.world.main:
            return
        save_checkpoint(
            self.checkpoint_dir / name,
            {
                "config": self.config,
                # the weights eval, predict and export use: the average, once there is one
                "model": bare(self.network(p.epoch)).state_dict(),
                **(
                    {}
                    if self.average is None
                    else {"trained": bare(self.model).state_dict(), "average": self.average.state_dict()}
                ),
                "optimizer": optimizer_state(self.optimizer_target, self.optimizer),
                "scheduler": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,  # fp16's loss scale
                "epoch": p.epoch,
                "step": p.step,
                "best_epoch": p.best_epoch,
                "best_value": p.best_value,
                "metrics": p.history,
                "in_epoch": p.in_epoch,  # None at an epoch's end; else where in the epoch, with its running sums
                "rng": rngs[0],
                "rng_ranks": rngs,  # one per process: dropout draws differ between them
                "world_size": self.world.size,
                "tracked": self.tracked,
                "inputs": self.data.record(),  # how inputs were prepared, for dlcli predict and export
            },
        )

    def resume_from(self, state: dict) -> None:
        """The optimizer, schedule, scaler and random generators as the checkpoint left them (where the
        run stood, its Progress, is given at construction)."""
        load_optimizer_state(self.optimizer_target, self.optimizer, state["optimizer"])
        if self.average is not None:  # checkpoints before SWA kept the EMA alone, as "ema"
            legacy = {"kind": "ema", "model": state["ema"], "scheduler": None} if "ema" in state else None
            saved = state.get("average", legacy)
            if saved is not None:
                self.average.load_state_dict(saved)
        self.schedule.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        world, saved = self.world, state.get("world_size", 1)
        if saved == world.size:
            restore_rng_states(state.get("rng_ranks", [state["rng"]])[world.rank], self.data.train.y.device)
        elif world.main:  # the others keep the generators run_training seeded for them
            log.warning(
                f"resuming a run of {saved} process(es) with {world.size}: it carries on, but not "
                f"bit for bit as {saved} process(es) would have (other batch shares, sums and draws)"
            )
            restore_rng_states(state["rng"], self.data.train.y.device)


def stalled(history: list[dict], monitor: str, patience: int | None, min_delta: float) -> str | None:
    """Why to stop early, or None: `patience` epochs in a row that did not improve the monitored value
    by more than min_delta over the best one so far. Computed from the history alone, so a resumed
    run decides exactly as an uninterrupted one."""
    if patience is None:
        return None
    higher = monitor.endswith("acc")
    best, best_epoch = None, 0
    for row in history:
        value = row[monitor]
        if best is None or (value - best > min_delta if higher else best - value > min_delta):
            best, best_epoch = value, row["epoch"]
    waited = len(history) - best_epoch if history else 0
    if waited < patience:
        return None
    by = f" by more than {min_delta:g}" if min_delta else ""
    return (
        f"{monitor} did not improve{by} for {waited} epochs (trainer.early_stopping.patience={patience}); "
        f"it last did at epoch {best_epoch}, to {best:.4g}"
    )


def autocast(precision: str, device: torch.device):
    """Mixed precision for the forward pass on CUDA; a no-op at 32 bits or on the CPU."""
    if precision == "32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: DataBundle,
    split: str,
    loss_fn: nn.Module,
    batch_size: int,
    autocast=contextlib.nullcontext,
    world: World = World(),
    keep: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> dict:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted) of a split;
    with several processes each evaluates its share and the sums are shared. `keep`, if given, is
    handed each batch's logits and labels (dlcli eval keeps every sample's probabilities)."""
    model.eval()
    k = data.num_classes
    total = torch.zeros(1, dtype=torch.float64, device=data.train.y.device)
    confusion = torch.zeros(k * k, dtype=torch.long, device=data.train.y.device)
    for x, y in eval_batches(data, split, batch_size, world.shard):
        with autocast():
            z = model(x)
        total += loss_fn(z.float(), y).double() * len(y)
        confusion += torch.bincount(y * k + z.argmax(1), minlength=k * k)
        if keep is not None:
            keep(z, y)
    world.sum_(total)
    world.sum_(confusion)
    confusion = confusion.view(k, k).cpu()
    n, correct = int(confusion.sum()), int(confusion.diagonal().sum())
    return {"loss": float(total) / n, "acc": correct / n, "n": n, "correct": correct, "confusion": confusion.tolist()}


def bare(model: nn.Module) -> nn.Module:
    """The model itself, without torch.compile's or DistributedDataParallel's wrapper."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _progress_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        leave=False,
        unit="step",
        dynamic_ncols=True,
        disable=not (enabled and sys.stderr.isatty()),
    )


class _StopFlag:
    signal: int | None = None


@contextlib.contextmanager
def _stop_requests(escalate: bool = True):
    """Turn SIGINT and SIGTERM into a flag the loop checks at each step boundary.

    Alone, a second Ctrl-C stops at once. Processes of a multi-process run get each signal twice
    (from the terminal or scheduler, and passed on by the launcher), so there it only repeats the
    request; the launcher kills whatever has not stopped after its grace period.
    """
    flag = _StopFlag()

    def request(signum, frame):
        if flag.signal is not None and escalate:
            raise KeyboardInterrupt
        flag.signal = flag.signal or signum

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, request)
        except ValueError:  # not the main thread (e.g. a launcher's worker): leave signals alone
            pass
    try:
        with interrupts.graceful(repeated=not escalate):  # the signal is ours: no forced exit while last.pt is saved
            yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
