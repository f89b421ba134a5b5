"""The models: one small named module per layer kind, one builder per `model=` choice.

Every model takes its input shape and number of classes from the data, so any model runs on
any image dataset (the MLP flattens, so it also runs on the 2-D toy points).
"""

import math

import torch
from torch import nn

from dlcli.settings import AlexNetSettings, LeNetSettings, MLPSettings


def activation(name: str) -> nn.Module:
    """h = g(a) for the configured nonlinearity g."""
    return {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,  # slope 0.01 for a < 0
        "elu": nn.ELU,
        "softplus": nn.Softplus,
        "gelu": nn.GELU,
    }[name]()


class Dense(nn.Module):
    """One hidden layer: a = b + W·h, then optional batch norm, h' = g(a), optional dropout."""

    def __init__(self, n_in: int, n_out: int, act: str, batch_norm: bool, dropout: float):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=not batch_norm)  # batch norm has its own shift
        self.norm = nn.BatchNorm1d(n_out) if batch_norm else nn.Identity()
        self.act = activation(act)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.linear(h))))


class MLP(nn.Module):
    def __init__(self, s: MLPSettings, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        sizes = [math.prod(input_shape), *s.widths]
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(*(Dense(a, b, s.activation, s.batch_norm, s.dropout)
                                      for a, b in zip(sizes[:-1], sizes[1:])))
        self.output = nn.Linear(sizes[-1], num_classes)
        init_weights(self, s.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.flatten(x)))


def pooling(kind: str) -> nn.Module:
    """2x2 subsampling: max, average, or L2 (sqrt of the sum of squares)."""
    return {"max": lambda: nn.MaxPool2d(2), "avg": lambda: nn.AvgPool2d(2), "lp": lambda: nn.LPPool2d(2, 2)}[kind]()


class LeNet5(nn.Module):
    """LeCun et al. 1998. 61,706 parameters for 1x28x28 input and 10 classes."""

    def __init__(self, s: LeNetSettings, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        channels, size, _ = input_shape
        pad = max(0, (32 - size) // 2)  # the paper's 32x32 input: MNIST's 28x28 padded by 2
        after = ((size + 2 * pad - 4) // 2 - 4) // 2  # two 5x5 valid convs, each followed by a 2x2 pool
        self.c1 = nn.Conv2d(channels, 6, 5, padding=pad)
        self.s2 = pooling(s.pooling)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.s4 = pooling(s.pooling)
        self.f5 = nn.Linear(16 * after * after, 120)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.act = activation(s.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.act
        x = self.s2(g(self.c1(x)))
        x = self.s4(g(self.c3(x)))
        x = g(self.f5(x.flatten(1)))
        return self.output(g(self.f6(x)))


class AlexNet(nn.Module):
    """Krizhevsky et al. 2012, sized for 28-32 px images: 5 conv + 3 FC layers, ReLU, max pooling,
    dropout. A 5x5 first layer at stride 1 replaces the 11x11 stride-4 one meant for 224 px."""

    def __init__(self, s: AlexNetSettings, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c1, c2, c3, c4, c5 = (max(1, round(c * s.width)) for c in (64, 192, 384, 256, 256))
        hidden = max(1, round(1024 * s.width))
        channels, size, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        after = size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(s.dropout), nn.Linear(c5 * after * after, hidden), nn.ReLU(inplace=True),
            nn.Dropout(s.dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS = {"mlp": MLP, "lenet": LeNet5, "alexnet": AlexNet}


def build_model(settings, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MODELS[settings.name](settings, input_shape, num_classes)


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialize weight matrices and kernels by `scheme`; biases start at zero."""
    if scheme == "default":
        return
    fill = {
        "xavier_uniform": nn.init.xavier_uniform_,
        "xavier_normal": nn.init.xavier_normal_,
        "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "normal": lambda w: nn.init.normal_(w, std=0.01),
    }[scheme]
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fill(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
