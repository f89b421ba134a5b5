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
ACCEPTED = (
    "checkpoint",
    "split",
    "allow",
    "data.root",
    "trainer.device",
    "trainer.eval_batch_size",
    "bins",
    "top_losses",
)
# the largest off-diagonal cells of the confusion matrix that eval.json and the printout name
CONFUSED_PAIRS = 10


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
    require(
        whole(cfg.bins) and 1 <= cfg.bins <= 100,
        "bins",
        cfg.bins,
        "an integer from 1 to 100: the equal-width confidence bins of ece and reliability.png",
    )
    require(
        whole(cfg.top_losses) and 0 <= cfg.top_losses <= 100,
        "top_losses",
        cfg.top_losses,
        "an integer from 0 to 100: how many of the highest-loss images top_losses.png shows (0: none)",
    )
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
    kept = []
    result = evaluate(
        model,
        data,
        cfg.split,
        build_loss(settings.loss, data.train.y, data.num_classes),
        t.eval_batch_size,
        lambda: autocast(t.precision, device),
        keep=lambda z, y: kept.append((z.float(), y)),
    )
    # in float64: float32's softmax rounds a confident sample's probability to exactly 1, tying it with others
    log_probabilities = torch.cat([z for z, _ in kept]).cpu().double().log_softmax(1).numpy()
    labels = torch.cat([y for _, y in kept]).cpu().numpy()

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
        **confusion_metrics(result["confusion"], data.classes),
        **probability_metrics(log_probabilities, labels, cfg.bins),
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
    draw_failures(data, cfg.split, report, log_probabilities, labels, cfg, run_dir)
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


def whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def confusion_metrics(confusion: list[list[int]], classes: tuple[str, ...]) -> dict:
    """What the counts tell per class: precision, recall (and its mean, balanced accuracy: what plain
    accuracy hides when the classes are imbalanced), F1, and the pairs of classes mixed up most."""
    from dlcli import metrics  # NumPy, as torch brings it: not before the arguments are checked

    return {
        "per_class_precision": metrics.per_class_precision(confusion),
        "per_class_recall": metrics.per_class_recall(confusion),
        "per_class_f1": metrics.per_class_f1(confusion),
        "balanced_acc": metrics.balanced_accuracy(confusion),
        "f1_macro": metrics.f1_macro(confusion),
        "confused_pairs": [
            {"true": classes[i], "predicted": classes[j], "count": count}
            for i, j, count in metrics.confused_pairs(confusion, CONFUSED_PAIRS)
        ],
    }


def probability_metrics(log_probabilities, labels, bins: int) -> dict:
    """How well the probabilities (N × classes NumPy log-probabilities) rank each class above the rest
    (ROC AUC, average precision; null for a class the split lacks) and how far the top probability
    is from the accuracy (ECE)."""
    import numpy as np

    from dlcli import metrics

    probabilities = np.exp(log_probabilities)
    auc = metrics.one_vs_rest(metrics.roc_auc, probabilities, labels)
    precision = metrics.one_vs_rest(metrics.average_precision, probabilities, labels)
    return {
        "roc_auc": auc,
        "roc_auc_macro": metrics.macro_mean(auc),
        "average_precision": precision,
        "average_precision_macro": metrics.macro_mean(precision),
        "ece": metrics.expected_calibration_error(probabilities.max(1), probabilities.argmax(1) == labels, bins),
        "ece_bins": bins,
    }


def draw_failures(
    data, split: str, report: dict, log_probabilities, labels, cfg: DictConfig, run_dir: Path
) -> list[Path]:
    """roc.png, precision_recall.png, reliability.png; top_losses.png for images."""
    import numpy as np
    import torch

    from dlcli import metrics

    probabilities = np.exp(log_probabilities)
    heading = f"{report['model']} on {report['data']} ({split})"
    classes = report["classes"]
    drawn = [
        plots.roc_curves(probabilities, labels, classes, report["roc_auc"], run_dir / "roc.png", heading),
        plots.precision_recall_curves(
            probabilities, labels, classes, report["average_precision"], run_dir / "precision_recall.png", heading
        ),
        plots.reliability(
            metrics.calibration_bins(probabilities.max(1), probabilities.argmax(1) == labels, cfg.bins),
            report["ece"],
            run_dir / "reliability.png",
            heading,
        ),
    ]
    samples = data.split(split)
    if cfg.top_losses and samples.x.dtype == torch.uint8 and samples.x.dim() == 4:
        # the cross-entropy of the true class, whatever loss trained the model: the confidently wrong first
        losses = -log_probabilities[np.arange(len(labels)), labels]
        worst = np.argsort(-losses, kind="stable")[: cfg.top_losses]
        images = torch.cat([samples.take(int(i), int(i) + 1).cpu() for i in worst])
        predicted = probabilities[worst].argmax(1)
        drawn.append(
            plots.top_losses(
                images,
                [classes[c] for c in labels[worst]],
                [classes[c] for c in predicted],
                probabilities[worst, predicted],
                run_dir / "top_losses.png",
                f"{heading}: the {len(worst)} highest-loss images",
            )
        )
    return drawn


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
    for name in ("loss", "accuracy", "balanced accuracy", "macro F1", "macro ROC AUC", "ECE"):
        head.add_column(name, justify="right")
    head.add_row(
        f"{report['loss']:.4f}",
        f"{report['acc']:.2%}",
        f"{report['balanced_acc']:.2%}",
        f"{report['f1_macro']:.4f}",
        number(report["roc_auc_macro"]),
        f"{report['ece']:.4f}",
    )
    console.print(head)

    classes = report["classes"]
    names = [f"{i} {name}" if name != str(i) else name for i, name in enumerate(classes)]
    per_class = Table(title="per class (ROC AUC, average precision: the class against the rest)")
    per_class.add_column("class")
    for name in ("precision", "recall", "F1", "ROC AUC", "average precision"):
        per_class.add_column(name, justify="right")
    for i, name in enumerate(names):
        per_class.add_row(
            name,
            f"{report['per_class_precision'][i]:.1%}",
            f"{report['per_class_recall'][i]:.1%}",
            f"{report['per_class_f1'][i]:.4f}",
            number(report["roc_auc"][i]),
            number(report["average_precision"][i]),
        )
    console.print(per_class)

    matrix = Table(title="confusion matrix (rows: true class, columns: predicted)")
    matrix.add_column("class")
    for i in range(len(classes)):
        matrix.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(names, report["confusion"])):
        cells = [f"[bold]{v}[/bold]" if j == i else (str(v) if v else "·") for j, v in enumerate(row)]
        matrix.add_row(name, *cells)
    console.print(matrix)

    if report["confused_pairs"]:
        pairs = Table(title="most confused (true class predicted as another)")
        for name, justify in (
            ("true", "left"),
            ("predicted", "left"),
            ("count", "right"),
            ("of the true class", "right"),
        ):
            pairs.add_column(name, justify=justify)
        totals = {name: sum(row) for name, row in zip(classes, report["confusion"])}
        for pair in report["confused_pairs"]:
            share = pair["count"] / totals[pair["true"]]
            pairs.add_row(pair["true"], pair["predicted"], str(pair["count"]), f"{share:.1%}")
        console.print(pairs)


def number(value: float | None) -> str:
    """A metric that may be undefined (None: no samples of the class) as the table shows it."""
    return "n/a" if value is None else f"{value:.4f}"
