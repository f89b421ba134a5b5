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


def gradient_flow(rows: list[dict], path: Path, title: str) -> Path:
    """Gradient norm per layer (input side on the left), one line per epoch."""
    plt = _pyplot()
    epochs = sorted({r["epoch"] for r in rows})
    layers = [r["layer"] for r in rows if r["epoch"] == epochs[0]]
    fig, (grad_ax, ratio_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    cmap = plt.get_cmap("viridis")
    for k, epoch in enumerate(epochs):
        mine = sorted((r for r in rows if r["epoch"] == epoch), key=lambda r: r["depth"])
        color = cmap(k / max(1, len(epochs) - 1))
        grad_ax.plot([r["depth"] for r in mine], [r["grad_norm"] for r in mine], "-o", color=color, markersize=3,
                     label=f"epoch {epoch}")
        ratio_ax.plot([r["depth"] for r in mine], [r["update_ratio"] for r in mine], "-o", color=color, markersize=3)
    for ax, label in ((grad_ax, "gradient norm ||dL/dW||"), (ratio_ax, "update / weight over the epoch")):
        ax.set_yscale("log")
        ax.set_xticks(range(1, len(layers) + 1), layers, rotation=45, ha="right", fontsize=7)
        ax.set(xlabel="layer (input -> output)", ylabel=label)
        ax.grid(alpha=0.3)
    grad_ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def sweep_gradient_flow(runs: list[tuple[str, list[dict]]], path: Path) -> Path:
    """First-epoch gradient norm per layer of every job that recorded diagnostics, overlaid."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, rows in runs:
        first = sorted((r for r in rows if r["epoch"] == rows[0]["epoch"]), key=lambda r: r["depth"])
        ax.plot([r["depth"] for r in first], [r["grad_norm"] for r in first], "-o", markersize=3, label=label)
    ax.set_yscale("log")
    ax.set(xlabel="layer depth (1 = input side)", ylabel="gradient norm ||dL/dW|| after epoch 1",
           title="gradient flow per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion_matrix(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    """Counts with rows as the true class and columns as the predicted one; colour is the row share."""
    plt = _pyplot()
    import numpy as np

    counts = np.array(confusion, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.6 * k + 3, 0.6 * k + 2.5))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class")
    return _save(fig, path)


def conv_filters(weight, path: Path, title: str) -> Path:
    """The first convolution's kernels as a grid of small images (RGB when there are 3 input channels)."""
    plt = _pyplot()

    w = weight.detach().float().cpu()
    n = w.shape[0]
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows + 0.6), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        kernel = w[k]
        if kernel.shape[0] == 3:  # show colour kernels as colours, each scaled to [0, 1]
            img = kernel.permute(1, 2, 0)
            img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
            ax.imshow(img.numpy())
        else:
            ax.imshow(kernel[0].numpy(), cmap="gray")
        ax.set_title(str(k), fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def decision_boundary(predict, x, y, path: Path, title: str, steps: int = 300) -> Path:
    """The model's predicted class over the plane, with the points on top (as in the TF playground)."""
    plt = _pyplot()
    import torch

    x, y = x.detach().float().cpu(), y.cpu()
    lo, hi = x.min(0).values - 0.3, x.max(0).values + 0.3
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], steps), torch.linspace(lo[1], hi[1], steps), indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    classes = predict(grid).reshape(steps, steps)
    k = int(max(y.max(), classes.max())) + 1
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab10")
    ax.contourf(gx.numpy(), gy.numpy(), classes.numpy(), levels=[i - 0.5 for i in range(k + 1)],
                colors=[cmap(i) for i in range(k)], alpha=0.25)
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), c=[cmap(int(c)) for c in y], s=6, edgecolors="none")
    ax.set(title=title, xlabel="x1", ylabel="x2", aspect="equal")
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
