"""`dlcli train`: Hydra config -> settings -> data, model, loss, optimizer -> Trainer -> files.

With trainer.devices=N, or under torchrun, the same run_training runs in every process
(dlcli.distributed); rank 0 writes the files.
"""

import copy
import dataclasses
import logging
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dlcli.commands.guard import keep_job, run_guarded
from dlcli.data.builtin import check_sources
from dlcli.distributed import join, launch, place
from dlcli.errors import ConfigError, Interrupted
from dlcli.files import write_json
from dlcli.layout import BEST, checkpoint_dir, last_checkpoint
from dlcli.loggers import Logger, build_logger, finishing, start_tracking
from dlcli.machine import peak_rss_mb, resolve_device, seed_all, set_threads, versions
from dlcli.plots import gradient_flow, gradient_through_time, learning_curves
from dlcli.settings import (
    CrossEntropySettings,
    ImageDataSettings,
    Settings,
    kwargs_of,
    load_settings,
    short_name,
    target_of,
)

log = logging.getLogger("dlcli")


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="train")
def main(cfg: DictConfig) -> float:
    kept = keep_job(cfg)  # a sweep job that trainer.resume=auto finds finished: its result, its folder untouched
    return run_guarded(train, cfg) if kept is None else kept


def train(cfg: DictConfig) -> float:
    """Train one config; returns the best validation accuracy (what a sweeper maximizes)."""
    settings = load_settings(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(settings.data, ImageDataSettings):
        check_sources(settings.data.name, settings.data.root, settings.data.download)  # before torch's import
    for key in ("root", "path", "test_path"):  # checkpoints must find the data again from any working directory
        if isinstance(config["data"].get(key), str):
            config["data"][key] = str(Path(config["data"][key]).expanduser().resolve())
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    if settings.trainer.devices > 1 and place() is None:
        summary = launch(run_training, settings, config, run_dir, resume_command(run_dir))
    else:
        summary = run_training(settings, config, run_dir, resume_command(run_dir))
    return summary["best_val_acc"]


def resume_command(run_dir: Path) -> str:
    """The command that continues this run after an interruption."""

    again = " ".join(
        o for o in HydraConfig.get().overrides.task if not o.startswith(("trainer.resume=", "hydra.run.dir="))
    )
    command = f"dlcli train {again} trainer.resume=auto hydra.run.dir={run_dir}".replace("  ", " ")
    return f"the same launcher command running {command}" if place() else command


def run_training(settings: Settings, config: dict, run_dir: Path, resume: str = "") -> dict:
    started = time.perf_counter()
    import torch

    from dlcli.averaging import build_average
    from dlcli.checkpoint import check_resumable, load_checkpoint, load_weights
    from dlcli.data import batches_per_epoch, load_data, mixing
    from dlcli.losses import build_loss
    from dlcli.models import count_parameters, on_device
    from dlcli.optim import build_optimizer, build_schedule
    from dlcli.profiling import StepProfile
    from dlcli.regularization import build_penalty
    from dlcli.trainer import Progress, Trainer, evaluate

    t = settings.trainer
    device = resolve_device(t.device)
    world = join(t.device, t.dist_timeout)
    if world.size > 1:
        _check_world(t, world)
        if device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
    threads = set_threads(t.threads, world.local_size)
    # before the data, in every process: a missing package is one line at once; rank 0 alone logs
    logger = build_logger(settings.logger)
    logger = logger if world.main else Logger()
    resume_path, resume_state = _resume_checkpoint(t.resume, run_dir, load_checkpoint)
    if resume_state is not None:
        check_resumable(resume_state, resume_path)
    seed_all(t.seed)

    data = load_data(settings.data, t.seed, t.val_fraction, device, world.local_size)
    model, data = on_device(settings.model, data, device, settings.trainer.channels_last)
    if resume_state is not None:  # an averaged run's checkpoint keeps the trained weights beside the average
        load_weights(model, {**resume_state, "model": resume_state.get("trained", resume_state["model"])}, resume_path)
    loss_fn = build_loss(settings.loss, data.train.y, data.num_classes)
    found_lr = kwargs_of(settings.optimizer).get("lr") == "auto"
    if found_lr:  # before the processes' models are joined: the test trains a plain copy in each alike
        settings, config = _with_found_lr(settings, config, model, data, loss_fn, resume_state, run_dir, world)
    network = model
    if world.size > 1:
        if device.type == "cuda":  # batch statistics over the global batch, as one process would take them
            model = network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        network = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
        torch.manual_seed(t.seed + world.rank)  # dropout: other draws in each process
    optimizer = build_optimizer(settings.optimizer, model, device)
    steps_per_epoch = batches_per_epoch(len(data.train), t.batch_size, world.size)
    penalty = build_penalty(settings.regularization, model)
    flow = None
    if t.diagnostics and world.main:
        from dlcli.diagnostics import GradientFlow

        n = min(256, len(data.train))
        if resume_state is None:
            (run_dir / "diagnostics.jsonl").unlink(missing_ok=True)
            (run_dir / "time_gradients.jsonl").unlink(missing_ok=True)
        flow = GradientFlow(
            model, data.inputs(data.train.head(n)), data.train.y[:n], loss_fn, penalty, run_dir / "diagnostics.jsonl"
        )
    progress = Progress()
    if resume_state is not None:
        progress = Progress.saved(resume_state)
        if resume_path.resolve().parent != checkpoint_dir(run_dir).resolve():
            # another run's checkpoint, into this folder: its best.pt is not here, so, as Lightning's
            # ModelCheckpoint does in a new dirpath, the best is the best epoch trained here (Trainer.fit)
            progress = dataclasses.replace(progress, best_epoch=0, best_value=None)
    mix = mixing(settings.data, data.num_classes)
    if mix is not None and not isinstance(settings.loss, CrossEntropySettings):
        raise ConfigError(
            f"data.mixup and data.cutmix train on mixed (soft) labels, which loss={short_name(settings.loss)} "
            "does not take; use loss=cross_entropy, or set data.mixup=0 data.cutmix=0"
        )
    trainer = Trainer(
        model=torch.compile(network) if t.compile else network,
        data=data,
        loss_fn=loss_fn,
        penalty=penalty,
        optimizer=optimizer,
        optimizer_target=target_of(settings.optimizer),
        schedule=build_schedule(settings.scheduler, optimizer, t.epochs, steps_per_epoch),
        settings=t,
        run_dir=run_dir,
        config=config,
        world=world,
        progress=progress,
        flow=flow,
        logger=logger,
        tracked=start_tracking(logger, settings.logger, run_dir, config, resume_state, progress.epoch),
        average=build_average(t, model, optimizer),
        profile=StepProfile(run_dir, device) if t.profile and world.main else None,
        mix=mix,
    )
    if resume_state is not None:
        trainer.resume_from(resume_state)  # after the tracker starts: it may draw random numbers of its own
        log.info(f"resumed from {resume_path} after epoch {progress.epoch}")
    params = count_parameters(model)
    processes = f", {world.size} processes ({'nccl' if device.type == 'cuda' else 'gloo'})" if world.size > 1 else ""
    log.info(
        f"{short_name(settings.model)} ({params:,} parameters) on {short_name(settings.data)}: "
        f"{len(data.train):,} train / {len(data.val):,} val / {len(data.test):,} test samples, "
        f"device {device} ({threads} CPU thread{'s' if threads > 1 else ''}){processes}, run dir {run_dir}"
    )

    with finishing(logger):  # a failed or interrupted run is marked so in the tracker
        try:
            progress = trainer.fit()
        except Interrupted as stop:
            raise Interrupted(stop.signum, stop.epoch, stop.step, resume) from None
        except RuntimeError as exc:
            if world.size > 1 and "finished reduction in the prior iteration" in str(exc):
                unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
                raise ConfigError(
                    f"{short_name(settings.model)} has parameters that its forward pass does not use "
                    f"({', '.join(unused[:5]) or 'some'}); DistributedDataParallel needs a gradient for "
                    "every parameter: remove them, freeze them (requires_grad=False), or train in one "
                    "process (trainer.devices=1)"
                ) from None
            raise
        finally:
            if trainer.profile is not None:  # the profiler leaves with the run, whichever way it ends
                trainer.profile.stop()

        world.barrier()  # rank 0 has written best.pt
        best_path = trainer.checkpoint_dir / BEST
        load_weights(model, load_checkpoint(best_path), best_path)
        test = evaluate(model, data, "test", loss_fn, t.eval_batch_size, trainer.autocast, world)
        best_row = progress.history[progress.best_epoch - 1]
        summary = {
            "status": "ok",
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "best_epoch": progress.best_epoch,
            "best_val_acc": best_row["val_acc"],
            "best_val_loss": best_row["val_loss"],
            "epochs": progress.epoch,
            "stopped": {
                "epoch": progress.epoch,
                "reason": f"early stopping: {progress.stop_reason}"
                if progress.stop_reason
                else f"completed trainer.epochs={t.epochs}",
            },
            "final_train_loss": progress.history[-1]["train_loss"],
            "params": params,
            **({"lr_find": {"suggested_lr": config["optimizer"]["lr"], "file": "lr_find.json"}} if found_lr else {}),
            "wall_seconds": round(time.perf_counter() - started, 3),
            "startup_seconds": trainer.startup_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "device": str(device),
            "processes": world.size,
            "versions": versions(),
        }
        if not world.main:
            return summary
        write_json(run_dir / "summary.json", summary)

        title = f"{short_name(settings.model)} on {short_name(settings.data)}: test acc {test['acc']:.2%}"
        learning_curves(progress.history, run_dir / "learning_curves.png", title)
        if trainer.flow is not None:
            gradient_flow(trainer.flow.rows, run_dir / "gradient_flow.png", title)
            if trainer.flow.time_rows:
                gradient_through_time(trainer.flow.time_rows, run_dir / "gradient_through_time.png", title)
    logger.finish("ok", summary, [best_path, run_dir / "summary.json", *sorted(run_dir.glob("*.png"))])
    log.info(
        f"test loss {test['loss']:.4f} acc {test['acc']:.2%} (best epoch {progress.best_epoch}, "
        f"val acc {best_row['val_acc']:.2%}); wrote {run_dir}"
    )
    return summary


def _with_found_lr(settings, config, model, data, loss_fn, resume_state, run_dir, world):
    """optimizer.lr=auto: the range test's suggestion (dlcli lr-find), run on a copy of the model
    under a forked generator, so training starts from the weights and draws it would have had;
    a resumed run takes the lr its checkpoint found."""
    import torch

    from dlcli.errors import CheckpointError, DivergedError
    from dlcli.lr_find import find_and_record
    from dlcli.optim import with_lr

    if resume_state is not None:
        lr = resume_state["config"].get("optimizer", {}).get("lr")
        if not isinstance(lr, (int, float)):
            raise CheckpointError(
                f"optimizer.lr=auto resumes with the lr its checkpoint found, and this one has none ({lr!r}); "
                "resume with the optimizer.lr it was trained with"
            )
    else:
        failed = None
        with torch.random.fork_rng(devices=[data.train.y.device] if data.train.y.is_cuda else []):
            try:
                found = find_and_record(settings, copy.deepcopy(model), data, loss_fn, run_dir if world.main else None)
            except DivergedError as exc:
                found, failed = {"suggested_lr": 0.0, "stopped": ""}, exc
        # every process ran the same test; rank 0's finding is kept, whatever a GPU's rounding did, and a
        # failure anywhere stops them all
        mine = [found["suggested_lr"] if world.main else 0.0, float(failed is not None)]
        lr, failures = world.sum_(torch.tensor(mine, dtype=torch.float64, device=data.train.y.device)).tolist()
        if failures:
            raise failed or DivergedError("the range test of optimizer.lr=auto failed in another process")
        log.info(f"optimizer.lr=auto: {lr:.3g}, the range test's suggestion ({found['stopped']}); see lr_find.png")
    settings = dataclasses.replace(settings, optimizer=with_lr(settings.optimizer, lr))
    return settings, {**config, "optimizer": {**config["optimizer"], "lr": lr}}


def _check_world(t, world) -> None:

    if t.batch_size < world.size:
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is smaller than the {world.size} processes, which "
            f"each take a share of every batch; use trainer.batch_size >= {world.size}"
        )
    if t.devices not in (1, world.local_size) and world.main:
        log.warning(
            f"trainer.devices={t.devices} is ignored: the launcher started {world.local_size} processes on this machine"
        )


def _resume_checkpoint(resume: str | None, run_dir: Path, load):
    """The checkpoint to resume from: None, `auto` (this run's last.pt, if any) or a path."""
    if resume is None:
        return None, None
    if resume == "auto":
        path = last_checkpoint(run_dir)
        if not path.exists():
            log.info(f"trainer.resume=auto: no {path} yet, starting from scratch")
            return None, None
    else:
        path = Path(resume).expanduser()
    return path, load(path)
