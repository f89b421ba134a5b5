"""Pictures, drawn with matplotlib's non-interactive Agg backend (no display needed)."""

import io
import logging
import math
from pathlib import Path

from dlcli.files import write_atomic

METRIC_LABELS = {
    "best_val_acc": "best val accuracy (%)",
    "test_acc": "test accuracy (%)",
    "final_train_loss": "final train loss",
}
DASHES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v")


def _pyplot():
    # hydra.verbose=true puts the root logger at DEBUG, and matplotlib would log every font lookup;
    # a level set on purpose (hydra.verbose=matplotlib) is kept
    for name in ("matplotlib", "matplotlib.font_manager", "PIL"):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
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


def lr_range(finding: dict, path: Path, title: str) -> Path:
    """The range test's loss against the lr (log scale), raw and smoothed, the suggestion marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(finding["lr"], finding["loss"], color="0.75", linewidth=0.8, label="loss of each batch")
    ax.plot(finding["lr"], finding["smoothed_loss"], color="C0", label="smoothed loss")
    lr = finding["suggested_lr"]
    ax.axvline(lr, color="C3", linestyle="--", label=f"suggested lr {lr:.3g}")
    ax.set_xscale("log")
    top = max(finding["smoothed_loss"][0], min(finding["smoothed_loss"])) * 1.5
    ax.set(xlabel="learning rate", ylabel="training loss", title=title, ylim=(0, top))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def sweep_curves(runs: list[tuple[str, list[dict]]]) -> bytes:
    """Validation accuracy per epoch of every job, overlaid, as PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, rows), style in zip(runs, line_styles(len(runs))):
        if rows:
            ax.plot([r["epoch"] for r in rows], [100 * r["val_acc"] for r in rows], markersize=3, label=label, **style)
    ax.set(xlabel="epoch", ylabel="val accuracy (%)", title="validation accuracy of every job")
    _epoch_axis(ax, max((r["epoch"] for _, rows in runs for r in rows), default=1))
    ax.grid(alpha=0.3)
    _legend(fig, ax, len(runs), loc="lower right")
    return _png(fig)


def line_styles(n: int) -> list[dict]:
    """Colour, dash and marker of n overlaid lines, no two alike for up to 200 lines."""
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    return [
        {"color": colors[i % 10], "linestyle": DASHES[i // 10 % 4], "marker": MARKERS[i // 40 % 5]} for i in range(n)
    ]


def _legend(fig, ax, lines: int, loc: str) -> None:
    """Inside the plot for a few lines, beside it for more; past 60 a legend would be taller than the plot."""
    if lines <= 10:
        ax.legend(fontsize=7, loc=loc, handlelength=3)
    elif lines <= 60:
        columns = -(-lines // 25)
        longest = max(len(label) for label in ax.get_legend_handles_labels()[1])
        fig.set_figwidth(fig.get_figwidth() + columns * (0.8 + 0.055 * longest))  # 7-point text, in inches
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncols=columns, handlelength=3)


def heatmap(
    x_name: str, x_values: list, y_name: str, y_values: list, grid: list[list[float | None]], metric: str
) -> bytes:
    """grid[i][j] = metric at (y_values[i], x_values[j]), as PNG bytes; cells are annotated, missing ones blank.

    The values sit in sorted order at equal spacing, which for log-spaced values is a log axis.
    """
    plt = _pyplot()
    import numpy as np

    scale = 100 if metric.endswith("acc") else 1
    data = np.array([[math.nan if v is None else scale * v for v in row] for row in grid], dtype=float)
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
            text = "failed" if math.isnan(value) else f"{value:.2f}" if scale == 100 else f"{value:.4f}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if math.isnan(value) or value < middle else "black",
            )
    label = METRIC_LABELS.get(metric, metric)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(f"{label} over {y_name} × {x_name}")
    return _png(fig)


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
        grad_ax.plot(
            [r["depth"] for r in mine],
            [r["grad_norm"] for r in mine],
            "-o",
            color=color,
            markersize=3,
            label=f"epoch {epoch}",
        )
        ratio_ax.plot([r["depth"] for r in mine], [r["update_ratio"] for r in mine], "-o", color=color, markersize=3)
    for ax, label in ((grad_ax, "gradient norm ||dL/dW||"), (ratio_ax, "update / weight over the epoch")):
        ax.set_yscale("log")
        ax.set_xticks(range(1, len(layers) + 1), layers, rotation=45, ha="right", fontsize=7)
        ax.set(xlabel="layer (input -> output)", ylabel=label)
        ax.grid(alpha=0.3)
    grad_ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def sweep_gradient_flow(runs: list[tuple[str, list[dict]]]) -> bytes:
    """First-epoch gradient norm per layer of every job that recorded diagnostics, overlaid, as PNG bytes."""

    def axes(ax) -> None:
        ax.set_yscale("log")
        ax.set(
            xlabel="layer depth (1 = input side)",
            ylabel="gradient norm ||dL/dW|| after epoch 1",
            title="gradient flow per layer",
        )
        ax.grid(alpha=0.3)

    def by_depth(rows: list[dict]) -> tuple[list[int], list[float]]:
        rows = sorted(rows, key=lambda r: r["depth"])
        return [r["depth"] for r in rows], [r["grad_norm"] for r in rows]

    return _first_epochs_overlaid(runs, by_depth, axes, markersize=3)


def gradient_through_time(rows: list[dict], path: Path, title: str) -> Path:
    """‖∂L/∂h_t‖ against the steps back from the last state of a recurrent net, one line per epoch."""
    plt = _pyplot()
    epochs = sorted({r["epoch"] for r in rows})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    cmap = plt.get_cmap("viridis")
    for k, epoch in enumerate(epochs):
        ax.plot(
            *_steps_back([r for r in rows if r["epoch"] == epoch]),
            color=cmap(k / max(1, len(epochs) - 1)),
            label=f"epoch {epoch}",
        )
    _time_axes(ax)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return _save(fig, path)


def sweep_gradient_through_time(runs: list[tuple[str, list[dict]]]) -> bytes:
    """First-epoch ‖∂L/∂h_t‖ of every recurrent job against the steps back from its last state, as PNG bytes."""

    def axes(ax) -> None:
        _time_axes(ax)
        ax.set_title("gradient through time after epoch 1")

    return _first_epochs_overlaid(runs, _steps_back, axes, marker=None)


def _first_epochs_overlaid(runs: list[tuple[str, list[dict]]], xy, axes, **line) -> bytes:
    """One line per job, (x, y) = xy(its first epoch's rows), in the sweep's line styles, as PNG bytes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for (label, rows), style in zip(runs, line_styles(len(runs))):
        ax.plot(*xy([r for r in rows if r["epoch"] == rows[0]["epoch"]]), label=label, **{**style, **line})
    axes(ax)
    _legend(fig, ax, len(runs), loc="best")
    return _png(fig)


def _steps_back(rows: list[dict]) -> tuple[list[int], list[float]]:
    """(T − t, ‖∂L/∂h_t‖), leaving out gradients that underflowed to 0 (no place on a log scale)."""
    last = max(r["step"] for r in rows)
    kept = sorted((r for r in rows if r["grad_norm"] > 0), key=lambda r: r["step"])
    return [last - r["step"] for r in kept], [r["grad_norm"] for r in kept]


def _time_axes(ax) -> None:
    ax.set_yscale("log")
    ax.set(xlabel="steps back from the last state, T - t", ylabel="||dL/dh_t||")
    ax.grid(alpha=0.3)


def confusion_matrix(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> Path:
    """Counts with rows as the true class and columns as the predicted one; colour is the row share."""
    plt = _pyplot()
    import numpy as np

    counts = np.array(confusion, dtype=float)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.6 * k + 3, 0.6 * k + 2.5))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    slanted = long_labels(classes)
    ax.set_xticks(range(k), classes, rotation=45 if slanted else 0, ha="right" if slanted else "center", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    # a colour bar in its own axes beside the matrix, as tall as the matrix
    fig.colorbar(
        image, cax=make_axes_locatable(ax).append_axes("right", size="4%", pad=0.15), label="share of the true class"
    )
    return _save(fig, path)


def long_labels(labels: list[str]) -> bool:
    """Names too long to sit side by side under matrix cells (digits are not; "airplane" is)."""
    return max(map(len, labels), default=0) > 3


def _grid(plt, n: int, cell: tuple[float, float]):
    """A figure of n small pictures, 8 to a row (inches per picture: `cell`), its axes bare and flat."""
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols, cell[1] * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, list(axes.flat)


def conv_filters(weight, path: Path, title: str) -> Path:
    """The first convolution's kernels as a grid of small images (RGB when there are 3 input channels)."""
    plt = _pyplot()

    w = weight.detach().float().cpu()
    n = w.shape[0]
    fig, axes = _grid(plt, n, (1.2, 1.2))
    for k, ax in enumerate(axes[:n]):
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


def decision_boundary(
    predict, x, y, path: Path, title: str, steps: int = 300, classes: list[str] | None = None
) -> Path:
    """The model's predicted class over the plane, with the points on top (as in the TF playground).

    The legend names each class's colour (by `classes`, else by number).
    """
    plt = _pyplot()
    import torch

    x, y = x.detach().float().cpu(), y.cpu()
    lo, hi = x.min(0).values - 0.3, x.max(0).values + 0.3
    gx, gy = torch.meshgrid(torch.linspace(lo[0], hi[0], steps), torch.linspace(lo[1], hi[1], steps), indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    predicted = predict(grid).reshape(steps, steps)
    k = int(max(y.max(), predicted.max())) + 1
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab10")
    ax.contourf(
        gx.numpy(),
        gy.numpy(),
        predicted.numpy(),
        levels=[i - 0.5 for i in range(k + 1)],
        colors=[cmap(i) for i in range(k)],
        alpha=0.25,
    )
    ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), c=[cmap(int(c)) for c in y], s=6, edgecolors="none")
    ax.set(title=title, xlabel="x1", ylabel="x2", aspect="equal")
    from matplotlib.lines import Line2D

    names = [classes[i] if classes and i < len(classes) else str(i) for i in range(k)]
    ax.legend(
        handles=[Line2D([], [], linestyle="", marker="o", color=cmap(i), label=names[i]) for i in range(k)],
        title="class",
        loc="best",
        fontsize=8,
    )
    return _save(fig, path)


# past this many classes one-vs-rest curves are drawn in grey, but for the weakest few in colour
COLOURED_CURVES = 10
WEAKEST_CURVES = 5


def roc_curves(probabilities, labels, classes: list[str], aucs: list[float | None], path: Path, title: str) -> Path:
    """One-vs-rest ROC curve of each class, on a linear false-positive axis and on a log one, where a
    good model's curves, crowded into the corner of the first, come apart."""
    from dlcli import metrics

    plt = _pyplot()
    fig, (linear, log) = plt.subplots(1, 2, figsize=(12, 5.2))
    curves = [metrics.roc_curve(probabilities[:, k], labels == k) for k in range(len(classes))]
    smallest = 1.0
    for ax in (linear, log):
        for k, style in _one_vs_rest_styles(classes, aucs, "AUC"):
            if curves[k] is not None:
                fpr, tpr, _ = curves[k]
                ax.plot(*_thinned(fpr, tpr, style), **style)
                smallest = min(smallest, fpr[fpr > 0].min(initial=1.0))
        ax.set(ylabel="true positive rate (recall)", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    linear.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    linear.set(xlabel="false positive rate", xlim=(-0.02, 1.02), title="ROC, one class against the rest")
    log.set_xscale("log")
    log.set(
        xlabel="false positive rate (log scale)", xlim=(smallest / 2, 1.05), title="the same, low false positive rates"
    )
    _curve_legend(linear, len(classes), loc="lower right")
    fig.suptitle(f"{title}: macro ROC AUC {_metric(metrics.macro_mean(aucs))}")
    return _save(fig, path)


def precision_recall_curves(
    probabilities, labels, classes: list[str], precisions: list[float | None], path: Path, title: str
) -> Path:
    """One-vs-rest precision-recall curve of each class (precision at each threshold, as steps), whole
    and closed in on the upper right, where a good model's curves bend."""
    from dlcli import metrics

    plt = _pyplot()
    import numpy as np

    fig, (whole, close) = plt.subplots(1, 2, figsize=(12, 5.2))
    curves = [metrics.precision_recall_curve(probabilities[:, k], labels == k) for k in range(len(classes))]
    drawn = [c for c in curves if c is not None]
    # the close-up starts a little below the worst class's precision at 80 % recall
    worst = min((precision[np.searchsorted(recall, 0.8)] for recall, precision in drawn), default=0.0)
    low = max(0.0, math.floor(worst * 20) / 20 - 0.05)
    for ax in (whole, close):
        for k, style in _one_vs_rest_styles(classes, precisions, "AP"):
            if curves[k] is not None:
                ax.plot(*_thinned(*curves[k], style), drawstyle="steps-pre", **style)
        ax.set(xlabel="recall", ylabel="precision")
        ax.grid(alpha=0.3)
    whole.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title="precision-recall, one class against the rest")
    margin = (1 - low) * 0.02
    close.set(
        xlim=(low - margin, 1 + margin),
        ylim=(low - margin, 1 + margin),
        title=f"the same, from {low:.0%} recall and precision",
    )
    _curve_legend(whole, len(classes), loc="lower left")
    fig.suptitle(f"{title}: macro average precision {_metric(metrics.macro_mean(precisions))}")
    return _save(fig, path)


def _one_vs_rest_styles(classes: list[str], scores: list[float | None], metric: str) -> list[tuple[int, dict]]:
    """(class, line style) in drawing order: each class in its colour for a few classes; for more, grey
    lines first and the WEAKEST_CURVES lowest-scoring in colour on top, named in the legend."""
    named = [f"{name} ({metric} {_metric(score)})" for name, score in zip(classes, scores)]
    if len(classes) <= COLOURED_CURVES:
        return [
            (k, {**style, "marker": None, "linewidth": 1.2, "label": named[k]})
            for k, style in enumerate(line_styles(len(classes)))
        ]
    defined = [k for k, score in enumerate(scores) if score is not None]
    weakest = sorted(defined, key=lambda k: scores[k])[:WEAKEST_CURVES]
    grey = [(k, {"color": "grey", "alpha": 0.35, "linewidth": 0.6}) for k in range(len(classes)) if k not in weakest]
    grey[:1] = [(k, {**style, "label": f"the other {len(grey)} classes"}) for k, style in grey[:1]]
    coloured = [
        (k, {**style, "marker": None, "linewidth": 1.4, "label": named[k]})
        for k, style in zip(weakest, line_styles(len(weakest)))
    ]
    return grey + coloured


def _thinned(x, y, style: dict, most: int = 500):
    """A grey background curve at most `most` points, evenly by threshold: a thousand classes' curves
    of every sample's score would take minutes to draw and show no more."""
    import numpy as np

    if style.get("color") != "grey" or len(x) <= most:
        return x, y
    keep = np.unique(np.linspace(0, len(x) - 1, most).round().astype(int))
    return x[keep], y[keep]


def _curve_legend(ax, classes: int, loc: str) -> None:
    title = None if classes <= COLOURED_CURVES else f"the {WEAKEST_CURVES} weakest in colour"
    ax.legend(fontsize=7, loc=loc, handlelength=3, title=title, title_fontsize=7)


def _metric(value: float | None) -> str:
    """An AUC or average precision; n/a for a class the split lacks, where it is undefined."""
    return "n/a" if value is None else f"{value:.4f}"


def reliability(grouped: dict, ece: float, path: Path, title: str) -> Path:
    """Accuracy against mean confidence per confidence bin (`dlcli.metrics.calibration_bins`), the gap to
    the diagonal shaded; below, how many samples each bin holds."""
    plt = _pyplot()
    import numpy as np

    edges, count = grouped["edges"], grouped["count"]
    bins = len(count)
    width, middles = np.diff(edges), (edges[:-1] + edges[1:]) / 2
    filled = count > 0
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    top.bar(
        edges[:-1][filled],
        grouped["accuracy"][filled],
        width=width[filled],
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.5,
        label="accuracy",
    )
    top.bar(
        edges[:-1][filled],
        (grouped["confidence"] - grouped["accuracy"])[filled],
        bottom=grouped["accuracy"][filled],
        width=width[filled],
        align="edge",
        fill=False,
        hatch="//",
        edgecolor="tab:red",
        linewidth=0.5,
        label="gap to the mean confidence",
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"{title}\nreliability: ECE {ece:.4f} over {bins} bins")
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(edges[:-1], count, width=width, align="edge", color="tab:grey", edgecolor="black", linewidth=0.5)
    if count.max() > 0:
        bottom.set_yscale("log")
        bottom.set_ylim(0.8, count.max() * 8)
    if bins <= 30:
        for x, n in zip(middles, count):
            if n:
                bottom.text(
                    x,
                    n * 1.15,
                    f"{n:,}",
                    ha="center",
                    va="bottom",
                    fontsize=6 if bins > 15 else 7,
                    rotation=90 if bins > 15 else 0,
                )
    bottom.set(xlabel="confidence (the predicted class's probability)", ylabel="samples (log scale)")
    bottom.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def top_losses(images, true: list[str], predicted: list[str], probability, path: Path, title: str) -> Path:
    """uint8 images [N, C, H, W] in a grid, each titled with its true class and the predicted one with
    its probability (red where they differ)."""
    plt = _pyplot()

    n = len(images)
    fig, axes = _grid(plt, n, (1.5, 1.75))
    for k, ax in enumerate(axes[:n]):
        image = images[k]
        if image.shape[0] == 3:
            ax.imshow(image.permute(1, 2, 0).numpy())
        else:  # one channel, or a count a picture has no colours for: the first
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(
            f"true {_short(true[k])}\npred {_short(predicted[k])} ({probability[k]:.0%})",
            fontsize=7,
            color="tab:red" if true[k] != predicted[k] else "black",
        )
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _short(name: str, most: int = 12) -> str:
    return name if len(name) <= most else name[: most - 1] + "…"


def log_spaced(values: list[float]) -> bool:
    """Positive values at roughly constant ratios spanning at least a factor of 10."""
    positive = sorted(v for v in values if v > 0)
    if len(positive) < len(values) or len(positive) < 2 or positive[-1] / positive[0] < 10:
        return False
    ratios = [b / a for a, b in zip(positive, positive[1:])]
    return max(ratios) / min(ratios) < 4


def _png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _save(fig, path: Path) -> Path:

    png = _png(fig)
    write_atomic(path, lambda f: f.write(png), binary=True)
    return path
