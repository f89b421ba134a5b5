"""The penalty lambda * Omega(theta) added to the objective, on weights only.

Omega counts weight matrices and convolution kernels; biases and normalization parameters
are never penalized (they do not make the function more complex, and shrinking them only hurts).
Each option of configs/regularization names one of the classes below as its `_target_`; a class of
your own is called the same way: with the weights to penalize and the option's other keys.
"""

import torch
from torch import nn

from dlcli.errors import ConfigError, first_line
from dlcli.machine import import_target
from dlcli.settings import kwargs_of, target_of


def penalized_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of linear layers and the kernels of convolutions."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


class Penalty:
    """lambda * (l1 * sum |W| + l2 * sum W^2) over the given weights; the options below set l1 and l2."""

    def __init__(self, weights: list[torch.Tensor], l1: float = 0.0, l2: float = 0.0):
        self.weights = weights
        self.l1 = l1
        self.l2 = l2

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


class NoPenalty(Penalty):
    def __init__(self, weights: list[torch.Tensor]):
        super().__init__(weights)


class L1(Penalty):
    """strength * sum |W|"""

    def __init__(self, weights: list[torch.Tensor], strength: float):
        super().__init__(weights, l1=strength)


class L2(Penalty):
    """strength * sum ||W||_F^2"""

    def __init__(self, weights: list[torch.Tensor], strength: float):
        super().__init__(weights, l2=strength)


class ElasticNet(Penalty):
    """strength * (l1_ratio * sum |W| + (1 - l1_ratio) * sum W^2)"""

    def __init__(self, weights: list[torch.Tensor], strength: float, l1_ratio: float):
        super().__init__(weights, l1=strength * l1_ratio, l2=strength * (1.0 - l1_ratio))


def build_penalty(spec, model: nn.Module) -> Penalty:
    """The regularization option's `_target_`, called with the model's weights and the option's keys."""
    cls = import_target(
        target_of(spec),
        "regularization._target_",
        "name a penalty class such as dlcli.regularization.L2, or one of your own that subclasses "
        "dlcli.regularization.Penalty",
    )
    if not (isinstance(cls, type) and issubclass(cls, Penalty)):
        raise ConfigError(
            f"regularization._target_={target_of(spec)} is invalid: it is not a subclass of "
            "dlcli.regularization.Penalty; subclass it, or choose regularization=none|l1|l2|elastic"
        )
    from hydra.utils import instantiate

    try:
        return cls(penalized_weights(model), **instantiate(kwargs_of(spec), _convert_="all"))
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"regularization._target_={target_of(spec)} could not be built ({type(cause).__name__}: "
            f"{first_line(cause)}); a penalty is called with the list of weights and the option's keys"
        ) from None
