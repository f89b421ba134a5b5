"""Pictures, drawn with matplotlib's non-interactive Agg backend (no display needed)."""

import math
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax, last_epoch: int) -> None:
    """Whole epochs on the x axis, even for a one-epoch run."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, last_epoch + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def learning_curves(rows: list[dict], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, train against val, side by side."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-o"), ("val", "-s")):
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in rows], style, label=split, markersize=3)
        acc_ax.plot(epochs, [100 * r[f"{split}_acc"] for r in rows], style, label=split, markersize=3)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in rows):
        loss_ax.set_yscale("log")
    for ax in (loss_ax, acc_ax):
        _epoch_axis(ax, max(epochs))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def sweep_curves(runs: list[tuple[str, list[dict]]], path: Path) -> Path:
    """Validation accuracy per epoch of every job, overlaid."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, rows in runs:
        if rows:
            ax.plot([r["epoch"] for r in rows], [100 * r["val_acc"] for r in rows], "-o", markersize=3, label=label)
    ax.set(xlabel="epoch", ylabel="val accuracy (%)", title="validation accuracy of every job")
    _epoch_axis(ax, max((r["epoch"] for _, rows in runs for r in rows), default=1))
    ax.grid(alpha=0.3)
    if len(runs) <= 16:
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def heatmap(x_name: str, x_values: list, y_name: str, y_values: list, grid: list[list[float | None]],
            path: Path, metric: str) -> Path:
    """grid[i][j] = metric at (y_values[i], x_values[j]); cells are annotated, missing ones blank.

    The values sit in sorted order at equal spacing, which for log-spaced values is a log axis.
    """
    plt = _pyplot()
    import numpy as np

    data = np.array([[math.nan if v is None else 100 * v for v in row] for row in grid], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 * len(x_values) + 2.5, 1.1 * len(y_values) + 2))
    image = ax.imshow(data, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(x_values)), [f"{v:g}" for v in x_values])
    ax.set_yticks(range(len(y_values)), [f"{v:g}" for v in y_values])
    ax.set_xlabel(x_name + (" (log scale)" if log_spaced(x_values) else ""))
    ax.set_ylabel(y_name + (" (log scale)" if log_spaced(y_values) else ""))
    finite = data[np.isfinite(data)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(y_values)):
        for j in range(len(x_values)):
            value = data[i, j]
            text = "failed" if math.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9,
                    color="white" if math.isnan(value) or value < middle else "black")
    fig.colorbar(image, ax=ax, label=f"{metric} (%)")
    ax.set_title(f"{metric} over {y_name} x {x_name}")
    return _save(fig, path)


def log_spaced(values: list[float]) -> bool:
    """Positive values at roughly constant ratios spanning at least a factor of 10."""
    positive = sorted(v for v in values if v > 0)
    if len(positive) < len(values) or len(positive) < 2 or positive[-1] / positive[0] < 10:
        return False
    ratios = [b / a for a, b in zip(positive, positive[1:])]
    return max(ratios) / min(ratios) < 4


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
