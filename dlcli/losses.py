"""Losses on the model's output z (logits, one row per sample) and integer labels y.

Each returns the mean over the batch; predictions are argmax z for all of them.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dlcli.settings import LossSettings


class CrossEntropy(nn.Module):
    """-log softmax(z)_y: softmax and negative log-likelihood fused for stability."""

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, y)


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


def build_loss(settings: LossSettings) -> nn.Module:
    if settings.name == "hinge":
        return Hinge(settings.margin)
    return {"cross_entropy": CrossEntropy, "nll": NLL, "mse": Quadratic}[settings.name]()
