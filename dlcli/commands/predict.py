"""`dlcli predict`: a checkpoint's model on new inputs (images, a folder of them, an .npy array or a CSV),
prepared as its training data was; the top classes per input, printed and in predictions.csv."""

import csv
import io
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dlcli.commands.guard import run_guarded
from dlcli.errors import ConfigError, DataError
from dlcli.files import write_atomic
from dlcli.layout import EXAMPLE
from dlcli.machine import set_threads
from dlcli.settings import (
    ImageFolderSettings,
    TrainerSettings,
    allow_list,
    check_max_pixels,
    existing_checkpoint,
    require,
)

log = logging.getLogger("dlcli")


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="predict")
def main(cfg: DictConfig) -> list:
    return run_guarded(predict, cfg)


def predict(cfg: DictConfig) -> list[dict]:
    for key, example in (
        ("checkpoint", f"checkpoint={EXAMPLE}"),
        ("inputs", "inputs=my_digits/ (an image, a folder of images, an .npy or a .csv)"),
    ):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise ConfigError(f"{key} is required: dlcli predict {example}")
    top_k, batch_size = cfg.top_k, cfg.trainer.eval_batch_size
    batch_size = TrainerSettings.eval_batch_size if batch_size is None else batch_size
    require(
        isinstance(top_k, int) and not isinstance(top_k, bool) and top_k >= 1,
        "top_k",
        top_k,
        "an integer >= 1: how many classes to list per input",
    )
    require(
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1,
        "trainer.eval_batch_size",
        batch_size,
        "an integer >= 1",
    )
    max_pixels = ImageFolderSettings.max_pixels if cfg.get("max_pixels") is None else cfg.max_pixels
    check_max_pixels(max_pixels, "max_pixels")
    path = existing_checkpoint(cfg.checkpoint, "checkpoint")  # before torch's import: a typo answers at once
    inputs = Path(cfg.inputs).expanduser()
    if not inputs.exists():
        raise DataError(f"inputs={inputs} does not exist; give an image, a folder of images, an .npy or a .csv file")

    import torch

    from dlcli.inputs import read_inputs, restore

    set_threads(0)
    restored = restore(path, allow_list(cfg.allow), cfg.trainer.device)
    names, x = read_inputs(inputs, restored.record, max_pixels)
    model, device = restored.model, restored.device
    classes = restored.classes
    k = min(top_k, len(classes))
    with torch.inference_mode():
        probabilities = torch.cat(
            [model(x[i : i + batch_size].to(device)).float().softmax(1).cpu() for i in range(0, len(x), batch_size)]
        )
    top_p, top_i = probabilities.topk(k, dim=1)
    rows = [
        {"input": name, "top": [(classes[i], p) for i, p in zip(ids.tolist(), ps.tolist())]}
        for name, ids, ps in zip(names, top_i, top_p)
    ]

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["input", "class", "probability"]
        + [f"{what}_{r}" for r in range(2, k + 1) for what in ("class", "probability")]
    )
    for row in rows:
        writer.writerow([row["input"]] + [v for name, p in row["top"] for v in (name, f"{p:.6f}")])
    write_atomic(run_dir / "predictions.csv", lambda f: f.write(buffer.getvalue()))
    print_predictions(rows, path, k)
    log.info(f"wrote {run_dir / 'predictions.csv'} ({len(rows)} input{'s' if len(rows) != 1 else ''})")
    return rows


def print_predictions(rows: list[dict], checkpoint: Path, k: int, limit: int = 50) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    console.print(f"[bold]predictions of {checkpoint}[/bold] ({len(rows)} input{'s' if len(rows) != 1 else ''})")
    table = Table()
    table.add_column("input")
    for r in range(1, k + 1):
        table.add_column(f"top {r}" if k > 1 else "class")
    for row in rows[:limit]:
        table.add_row(row["input"], *(f"{name} ({p:.1%})" for name, p in row["top"]))
    console.print(table)
    if len(rows) > limit:
        console.print(f"... {len(rows) - limit} more in predictions.csv")
