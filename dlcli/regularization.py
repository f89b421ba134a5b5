"""The penalty lambda * Omega(theta) added to the objective, on weights only.

Omega counts weight matrices and convolution kernels; biases and normalization parameters
are never penalized (they do not make the function more complex, and shrinking them only hurts).
"""

import torch
from torch import nn

from dlcli.settings import RegularizationSettings


def penalized_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of linear layers and the kernels of convolutions."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


class Penalty:
    """lambda * (l1_share * sum |W| + l2_share * sum W^2) over the given weights."""

    def __init__(self, settings: RegularizationSettings, weights: list[torch.Tensor]):
        self.weights = weights
        shares = {
            "none": (0.0, 0.0),
            "l1": (1.0, 0.0),
            "l2": (0.0, 1.0),
            "elastic": (settings.l1_ratio, 1.0 - settings.l1_ratio),
        }[settings.name]
        self.l1 = settings.strength * shares[0]
        self.l2 = settings.strength * shares[1]

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.l2 > 0

    def __call__(self) -> torch.Tensor:
        total = torch.zeros((), device=self.weights[0].device) if self.weights else torch.zeros(())
        for w in self.weights:
            if self.l1:
                total = total + self.l1 * w.abs().sum()
            if self.l2:
                total = total + self.l2 * w.pow(2).sum()
        return total
