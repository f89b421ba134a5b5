"""The training loop: forward, loss + penalty, backward, step; evaluate; checkpoint.

Per-step numbers (loss, correct predictions) stay on the device in a small window and are
read once every `log_every` steps, so a GPU never waits on the host inside the loop.
"""

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dlcli.app import process_age
from dlcli.checkpoint import restore_rng_states, rng_states, save_checkpoint
from dlcli.diagnostics import GradientFlow
from dlcli.data import DataBundle, batches_per_epoch, eval_batches, train_batches
from dlcli.errors import DivergedError, Interrupted
from dlcli.files import write_metrics
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

    def __post_init__(self) -> None:
        device = self.data.train.y.device
        fp16 = self.settings.precision == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None  # fp16 gradients underflow unscaled
        self.stop = _StopFlag()  # fit() connects it to SIGINT/SIGTERM

    def autocast(self):
        return autocast(self.settings.precision, self.data.train.y.device)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def fit(self) -> Progress:
        """Train to trainer.epochs. SIGINT/SIGTERM stop at the next step boundary with last.pt saved."""
        s = self.settings
        write_metrics(self.run_dir, self.progress.history)  # a resumed run's files match its checkpoint
        with _stop_requests() as stop:
            self.stop = stop
            for epoch in range(self.progress.epoch + 1, s.epochs + 1):
                started = time.perf_counter()
                train_loss, train_acc, trained = self.train_epoch(epoch)
                train_seconds = time.perf_counter() - started  # the epoch's last window read synced the device
                if self.flow is not None:
                    self.flow.record(epoch)
                val = evaluate(self.model, self.data, "val", self.loss_fn, s.eval_batch_size, self.autocast)
                self.schedule.after_epoch(val["loss"])
                seconds = time.perf_counter() - started
                row = {
                    "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                    "val_loss": val["loss"], "val_acc": val["acc"], "lr": self.optimizer.param_groups[0]["lr"],
                    "epoch_seconds": round(seconds, 4), "samples_per_second": round(trained / train_seconds, 1),
                }
                self.progress.epoch, self.progress.in_epoch = epoch, None
                self.progress.history.append(row)
                log.info(f"epoch {epoch}/{s.epochs}  train loss {train_loss:.4f} acc {train_acc:.2%}  "
                         f"val loss {val['loss']:.4f} acc {val['acc']:.2%}  lr {row['lr']:.3g}  "
                         f"{seconds:.1f}s ({row['samples_per_second']:,.0f} train samples/s)")
                if self.progress.improved(s.monitor, row[s.monitor]):
                    self.progress.best_value, self.progress.best_epoch = row[s.monitor], epoch
                    self.save("best.pt")  # before last.pt: a kill in between redoes this epoch, same result
                self.save("last.pt")
                write_metrics(self.run_dir, self.progress.history)
        return self.progress

    def train_epoch(self, epoch: int) -> tuple[float, float, int]:
        """The epoch's train loss and accuracy, and how many samples this call trained on (after a
        mid-epoch resume, fewer than the epoch holds: the rest were trained before the restart)."""
        s, model, p = self.settings, self.model, self.progress
        model.train()
        order = torch.Generator().manual_seed(s.seed * 100_003 + epoch)  # data order depends on (seed, epoch) only
        n_batches = batches_per_epoch(len(self.data.train), s.batch_size)
        window_loss = torch.zeros(s.log_every, device=self.data.train.y.device)
        window_hits = torch.zeros(s.log_every, device=self.data.train.y.device, dtype=torch.long)
        sizes: list[int] = []  # batch sizes of the current window, known on the host
        part = p.in_epoch or {"batch": 0, "total_loss": 0.0, "total_hits": 0, "seen": 0}  # mid-epoch resume
        first, seen_before = part["batch"], part["seen"]
        bar = _progress_bar(n_batches, f"epoch {epoch}/{s.epochs}", s.progress, initial=first)

        def flush() -> None:
            """Read the window (the one host-device sync) into the epoch's totals."""
            nonlocal sizes
            losses = window_loss[:len(sizes)].tolist()
            self._check_finite(losses, epoch)
            for value, n in zip(losses, sizes):  # one at a time: the same sums however windows fall
                part["total_loss"] += value * n
            part["total_hits"] += int(window_hits[:len(sizes)].sum())
            part["seen"] += sum(sizes)
            bar.update(len(sizes))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{part['total_hits'] / part['seen']:.2%}")
            sizes = []

        for b, (x, y) in enumerate(train_batches(self.data, s.batch_size, order, start=first), start=first):
            with self.autocast():
                z = model(x)
                loss = self.loss_fn(z, y)
            objective = loss + self.penalty() if self.penalty.active else loss
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                objective.backward()
                self._clip()
                self.optimizer.step()
            else:
                self.scaler.scale(objective).backward()
                self.scaler.unscale_(self.optimizer)
                self._clip()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.schedule.after_step()
            p.step += 1
            if self.startup_seconds is None:
                self.startup_seconds = process_age()
            window_loss[len(sizes)] = loss.detach()
            window_hits[len(sizes)] = (z.argmax(1) == y).sum()
            sizes.append(len(y))
            every = s.checkpoint_every_steps
            checkpoint_now = (every and p.step % every == 0) or self.stop.signal is not None
            if len(sizes) == s.log_every or b == n_batches - 1 or (checkpoint_now and sizes):
                flush()
            if checkpoint_now and b < n_batches - 1:
                p.in_epoch = {**part, "batch": b + 1}
                self.save("last.pt")
                if self.stop.signal is not None:
                    bar.close()
                    raise Interrupted(self.stop.signal, epoch, p.step)
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
                kept = self.checkpoint_dir / "last.pt"
                kept_msg = f"the last good checkpoint {kept} is kept" if kept.exists() else "no checkpoint was written"
                raise DivergedError(f"loss became {value} at epoch {epoch}, step {step} (last finite loss {last}); "
                                    f"training stopped and {kept_msg}; try a smaller optimizer.lr")

    def save(self, name: str) -> None:
        p = self.progress
        save_checkpoint(self.checkpoint_dir / name, {
            "config": self.config,
            "model": getattr(self.model, "_orig_mod", self.model).state_dict(),  # without torch.compile's wrapper
            "optimizer": optimizer_state(self.optimizer_target, self.optimizer),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,  # fp16's loss scale
            "epoch": p.epoch,
            "step": p.step,
            "best_epoch": p.best_epoch,
            "best_value": p.best_value,
            "metrics": p.history,
            "in_epoch": p.in_epoch,  # None at an epoch's end; else where in the epoch, with its running sums
            "rng": rng_states(),
        })

    def resume_from(self, state: dict) -> None:
        load_optimizer_state(self.optimizer_target, self.optimizer, state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_states(state["rng"])
        self.progress = Progress(epoch=state["epoch"], step=state["step"], best_epoch=state["best_epoch"],
                                 best_value=state["best_value"], history=list(state["metrics"]),
                                 in_epoch=state.get("in_epoch"))


def autocast(precision: str, device: torch.device):
    """Mixed precision for the forward pass on CUDA; a no-op at 32 bits or on the CPU."""
    if precision == "32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.inference_mode()
def evaluate(model: nn.Module, data: DataBundle, split: str, loss_fn: nn.Module, batch_size: int,
             autocast=contextlib.nullcontext) -> dict:
    """Loss, accuracy and the confusion matrix (rows: true class, columns: predicted) of a split."""
    model.eval()
    k = data.num_classes
    total = torch.zeros((), dtype=torch.float64, device=data.train.y.device)
    confusion = torch.zeros(k * k, dtype=torch.long, device=data.train.y.device)
    n = 0
    for x, y in eval_batches(data, split, batch_size):
        with autocast():
            z = model(x)
        total += loss_fn(z.float(), y).double() * len(y)
        confusion += torch.bincount(y * k + z.argmax(1), minlength=k * k)
        n += len(y)
    confusion = confusion.view(k, k).cpu()
    correct = int(confusion.diagonal().sum())
    return {"loss": float(total) / n, "acc": correct / n, "n": n, "correct": correct, "confusion": confusion.tolist()}


def _progress_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, unit="step", dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


class _StopFlag:
    signal: int | None = None


@contextlib.contextmanager
def _stop_requests():
    """Turn SIGINT and SIGTERM into a flag the loop checks at each step boundary."""
    flag = _StopFlag()

    def request(signum, frame):
        if flag.signal is not None:  # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        flag.signal = signum

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, request)
        except ValueError:  # not the main thread (e.g. a launcher's worker): leave signals alone
            pass
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
