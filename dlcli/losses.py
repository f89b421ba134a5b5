"""Losses on the model's output z (logits, one row per sample) and integer labels y.

Each returns the mean over the batch; predictions are argmax z for all of them. A config names
its loss by `_target_`, so any module of that form plugs in (torch.nn.CrossEntropyLoss, say).
"""

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.errors import ConfigError, first_line
from dlcli.machine import import_target
from dlcli.settings import CrossEntropySettings, kwargs_of, target_of


class CrossEntropy(nn.Module):
    """-log softmax(z)_y: softmax and negative log-likelihood fused for stability; optionally with
    smoothed targets and per-class weights (torch's F.cross_entropy does both)."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: list[float] | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = None if self.class_weights is None else self.class_weights.to(z.dtype)
        return F.cross_entropy(z, y, weight=w, label_smoothing=self.label_smoothing)


def class_weights(wanted, labels: torch.Tensor, classes: int) -> list[float] | None:
    """loss.class_weights as numbers: balanced is n / (K * n_k) from the training labels (scikit-learn's
    rule; 0 for a class the split lacks); a list must have one weight per class."""
    if wanted is None:
        return None
    if wanted == "balanced":
        counts = torch.bincount(labels.cpu(), minlength=classes).double()
        return [len(labels) / (classes * c) if c else 0.0 for c in counts.tolist()]
    if len(wanted) != classes:
        raise ConfigError(
            f"loss.class_weights={list(wanted)} is invalid: this data has {classes} classes, so give "
            f"{classes} weights, or loss.class_weights=balanced"
        )
    return [float(v) for v in wanted]


class NLL(nn.Module):
    """A log-softmax output layer followed by the negative log-likelihood of the label."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(z, dim=1), y)


class Quadratic(nn.Module):
    """The quadratic loss 1/2 sum_k (softmax(z)_k - onehot(y)_k)^2 on probabilities."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = F.softmax(z, dim=1)
        target = F.one_hot(y, z.shape[1]).to(p.dtype)
        return 0.5 * (p - target).pow(2).sum(1).mean()


class Hinge(nn.Module):
    """Multi-class margin: sum over j != y of max(0, margin - z_y + z_j), divided by the classes."""

    def __init__(self, margin: float):
        super().__init__()
        self.margin = margin

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.multi_margin_loss(z, y, margin=self.margin)


def build_loss(spec, labels: torch.Tensor | None = None, classes: int = 0) -> nn.Module:
    """The loss option's module, on the device of `labels` (the training split's, which
    loss.class_weights=balanced counts)."""
    from hydra.utils import instantiate

    cls = import_target(target_of(spec), "loss._target_", "name a loss module such as dlcli.losses.CrossEntropy")
    keys = kwargs_of(spec)
    if (
        isinstance(spec, CrossEntropySettings) and spec.class_weights is not None
    ):  # every caller with weights has labels
        keys["class_weights"] = class_weights(spec.class_weights, labels, classes)
    try:
        loss = cls(**instantiate(keys, _convert_="all"))
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"loss._target_={target_of(spec)} could not be built ({type(cause).__name__}: "
            f"{first_line(cause)}); name a loss module "
            "called as loss(logits, labels), e.g. dlcli.losses.CrossEntropy"
        ) from None
    if not isinstance(loss, nn.Module):  # a checkpoint's loss must be one (dlcli.targets): so is a run's
        raise ConfigError(
            f"loss._target_={target_of(spec)} built a {type(loss).__name__}, not a torch.nn.Module; "
            "name a loss module called as loss(logits, labels), e.g. torch.nn.CrossEntropyLoss"
        )
    return loss.to(labels.device) if labels is not None else loss
