"""`dlcli eval`: rebuild the model from the config inside a checkpoint and evaluate it."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dlcli import plots
from dlcli.commands.guard import run_guarded
from dlcli.errors import ConfigError
from dlcli.files import write_json
from dlcli.layout import EXAMPLE
from dlcli.machine import resolve_device, set_threads, versions
from dlcli.settings import (
    ImageDataSettings,
    allow_list,
    existing_checkpoint,
    leaves,
    load_settings,
    require,
    short_name,
)

log = logging.getLogger("dlcli")


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="eval")
def main(cfg: DictConfig) -> dict:
    return run_guarded(evaluate_checkpoint, cfg)


# what eval reads from its command line; everything else comes from the checkpoint
ACCEPTED = ("checkpoint", "split", "allow", "data.root", "trainer.device", "trainer.eval_batch_size")


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "checkpoint") or not cfg.checkpoint:
        raise ConfigError(f"checkpoint is required: dlcli eval checkpoint={EXAMPLE}")
    unused = [
        key
        for key, _ in leaves(OmegaConf.to_container(cfg))
        if not any(key == a or key.startswith(a + ".") for a in ACCEPTED)
    ]  # allow.0 is allow's
    if unused:  # e.g. +model=alexnet: evaluating the checkpoint's model anyway would mislead
        raise ConfigError(unused_key_message(unused[0]))
    require(cfg.split in ("test", "val"), "split", cfg.split, "test or val")
    path = existing_checkpoint(cfg.checkpoint, "checkpoint")  # before importing torch: a typo answers at once

    import torch

    from dlcli.checkpoint import config_to_rebuild, load_checkpoint, load_weights
    from dlcli.data import load_data
    from dlcli.losses import build_loss
    from dlcli.models import on_device
    from dlcli.trainer import autocast, evaluate

    state = load_checkpoint(path)
    config = config_to_rebuild(state, path, allow_list(cfg.allow))
    if cfg.data.root is not None:  # a folder of the user's choosing: the data may be downloaded there as trained
        config["data"]["root"] = str(cfg.data.root)
        if "download" in config["data"]:
            config["data"]["download"] = bool(state["config"]["data"].get("download"))
    config["trainer"]["device"] = cfg.trainer.device
    if cfg.trainer.eval_batch_size is not None:
        config["trainer"]["eval_batch_size"] = cfg.trainer.eval_batch_size
    settings = load_settings(config)
    t = settings.trainer
    set_threads(t.threads)
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)

    data = load_data(settings.data, t.seed, t.val_fraction, device)
    model, data = on_device(settings.model, data, device, t.channels_last)  # laid out as in training: same numbers
    load_weights(model, state, path)
    result = evaluate(
        model,
        data,
        cfg.split,
        build_loss(settings.loss, data.train.y, data.num_classes),
        t.eval_batch_size,
        lambda: autocast(t.precision, device),
    )

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    report = {
        "checkpoint": str(path.resolve()),
        "split": cfg.split,
        "epoch": state["epoch"],
        "model": short_name(settings.model),
        "data": short_name(settings.data),
        "loss": result["loss"],
        "acc": result["acc"],
        "n": result["n"],
        # recall per class, and its mean: what accuracy hides when the classes are imbalanced
        "per_class_recall": per_class_recall(result["confusion"]),
        "balanced_acc": balanced_accuracy(result["confusion"]),
        "classes": list(data.classes),
        "confusion": result["confusion"],
        "device": str(device),
        "versions": versions(),
    }
    if isinstance(settings.data, ImageDataSettings):
        report["data_root"] = settings.data.root
    write_json(run_dir / "eval.json", report)
    print_report(report)
    draw_pictures(model, data, cfg.split, report, run_dir)
    log.info(f"wrote {run_dir / 'eval.json'}")
    return report


def unused_key_message(key: str) -> str:
    shown = key if key.split(".")[0] in ("data", "trainer") else key.split(".")[0]
    return (
        f"{shown} is not used by dlcli eval (the model, data and training settings come from the checkpoint); "
        f"it accepts: {', '.join(ACCEPTED)}"
    )


def draw_pictures(model, data, split: str, report: dict, run_dir: Path) -> list[Path]:
    """confusion_matrix.png; filters.png for image models; decision_boundary.png for 2-D points."""
    import torch
    from torch import nn

    title = f"{report['model']} on {report['data']} ({split}): accuracy {report['acc']:.2%}"
    drawn = [plots.confusion_matrix(report["confusion"], report["classes"], run_dir / "confusion_matrix.png", title)]
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None:
        drawn.append(
            plots.conv_filters(
                first_conv.weight,
                run_dir / "filters.png",
                f"{report['model']}: first convolution's {first_conv.out_channels} filters",
            )
        )
    if data.input_shape == (2,):
        points = data.split(split)

        @torch.inference_mode()
        def predict(grid):
            model.eval()
            return model(grid.to(points.x.device)).argmax(1).cpu()

        drawn.append(plots.decision_boundary(predict, points.x, points.y, run_dir / "decision_boundary.png", title))
    return drawn


def per_class_recall(confusion: list[list[int]]) -> list[float]:
    """Of each class's samples, the fraction predicted as that class (0 for a class with none)."""
    return [row[i] / sum(row) if sum(row) else 0.0 for i, row in enumerate(confusion)]


def balanced_accuracy(confusion: list[list[int]]) -> float:
    """The mean recall over the classes the split holds."""
    recalls = [row[i] / sum(row) for i, row in enumerate(confusion) if sum(row)]
    return sum(recalls) / len(recalls) if recalls else 0.0


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    # a log file or pipe gets the full table rather than rich's 80-column default
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    # the heading on a line of its own: as the title of this narrow table it would wrap
    console.print(
        f"[bold]{report['model']} on {report['data']}[/bold] ({report['split']}, {report['n']:,} samples, "
        f"epoch {report['epoch']})"
    )
    head = Table()
    head.add_column("loss", justify="right")
    head.add_column("accuracy", justify="right")
    head.add_column("balanced accuracy", justify="right")
    head.add_row(f"{report['loss']:.4f}", f"{report['acc']:.2%}", f"{report['balanced_acc']:.2%}")
    console.print(head)

    classes = report["classes"]
    matrix = Table(title="confusion matrix (rows: true class, columns: predicted)")
    matrix.add_column("class")
    matrix.add_column("recall", justify="right")
    for i in range(len(classes)):
        matrix.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(classes, report["confusion"])):
        cells = [f"[bold]{v}[/bold]" if j == i else (str(v) if v else "·") for j, v in enumerate(row)]
        matrix.add_row(f"{i} {name}" if name != str(i) else name, f"{report['per_class_recall'][i]:.1%}", *cells)
    console.print(matrix)
