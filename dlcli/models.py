"""The models: one small named module per layer kind, one class per `model=` choice.

Every model is built by its config's `_target_` with the keyword arguments `input_shape` and
`num_classes` from the data and the rest from the config, so any model runs on any image dataset
(the MLP flattens, so it also runs on the 2-D toy points), and a user's own class plugs in the
same way. The arguments have no defaults here: those live in the config schemas (settings.py).
"""

import dataclasses
import math

import torch
from torch import nn

from dlcli.errors import ConfigError, first_line
from dlcli.machine import import_target
from dlcli.settings import kwargs_of, target_of

# h = g(a): each of settings.ACTIVATIONS, the nonlinearity g it names
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # slope 0.01 for a < 0
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def make_activation(name: str) -> nn.Module:
    """h = g(a) for the configured nonlinearity g."""
    return ACTIVATION_LAYERS[name]()


class Dense(nn.Module):
    """One hidden layer: a = b + W·h, then optional batch norm, h' = g(a), optional dropout."""

    def __init__(self, n_in: int, n_out: int, act: str, batch_norm: bool, dropout: float):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=not batch_norm)  # batch norm has its own shift
        self.norm = nn.BatchNorm1d(n_out) if batch_norm else nn.Identity()
        self.act = make_activation(act)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.linear(h))))


class Shortcut(nn.Module):
    """h' = h + F(h): an identity shortcut around a layer, so the gradient reaches h unattenuated."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.layer(h)


class MLP(nn.Module):
    def __init__(
        self,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        depth: int,
        width: int | list[int],
        activation: str,
        dropout: float,
        batch_norm: bool,
        init: str,
        residual: bool = False,
    ):
        super().__init__()
        widths = list(width) if isinstance(width, (list, tuple)) else [width] * depth
        sizes = [math.prod(input_shape), *widths]
        layers = [Dense(a, b, activation, batch_norm, dropout) for a, b in zip(sizes[:-1], sizes[1:])]
        if residual:  # around every hidden layer after the first (the first changes the width)
            layers = layers[:1] + [Shortcut(layer) for layer in layers[1:]]
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(sizes[-1], num_classes)
        init_weights(self, init)
        shortcuts = [m for m in layers if isinstance(m, Shortcut)]
        for m in shortcuts:  # each branch adds to h: scaled by 1/sqrt(L) (as in Fixup, Zhang et al. 2019), the
            m.layer.linear.weight.data.mul_(len(shortcuts) ** -0.5)  # sum stays bounded at init, ReLU's too

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(self.flatten(x)))


def make_pooling(kind: str) -> nn.Module:
    """2x2 subsampling: max, average, or L2 (sqrt of the sum of squares)."""
    return {"max": lambda: nn.MaxPool2d(2), "avg": lambda: nn.AvgPool2d(2), "lp": lambda: nn.LPPool2d(2, 2)}[kind]()


class LeNet5(nn.Module):
    """LeCun et al. 1998. 61,706 parameters for 1x28x28 input and 10 classes."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, activation: str, pooling: str):
        super().__init__()
        _need_images(self, input_shape)
        channels, size, _ = input_shape
        pad = max(0, (32 - size) // 2)  # the paper's 32x32 input: MNIST's 28x28 padded by 2
        after = ((size + 2 * pad - 4) // 2 - 4) // 2  # two 5x5 valid convs, each followed by a 2x2 pool
        self.c1 = nn.Conv2d(channels, 6, 5, padding=pad)
        self.s2 = make_pooling(pooling)
        self.c3 = nn.Conv2d(6, 16, 5)
        self.s4 = make_pooling(pooling)
        self.f5 = nn.Linear(16 * after * after, 120)
        self.f6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.act
        x = self.s2(g(self.c1(x)))
        x = self.s4(g(self.c3(x)))
        x = g(self.f5(x.flatten(1)))
        return self.output(g(self.f6(x)))


class AlexNet(nn.Module):
    """Krizhevsky et al. 2012, sized for 28-32 px images: 5 conv + 3 FC layers, ReLU, max pooling,
    dropout. A 5x5 first layer at stride 1 replaces the 11x11 stride-4 one meant for 224 px."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, width: float, dropout: float):
        super().__init__()
        _need_images(self, input_shape)
        c1, c2, c3, c4, c5 = (max(1, round(c * width)) for c in (64, 192, 384, 256, 256))
        hidden = max(1, round(1024 * width))
        channels, size, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        after = size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c5 * after * after, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """relu(x + F(x)), F = two 3x3 convolutions with batch norm; where F changes the shape (stride 2,
    more channels), the shortcut is a 1x1 convolution with batch norm instead of the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(self.shortcut(x) + f)


class ResNet(nn.Module):
    """He et al. 2016, the CIFAR family: a 3x3 stem, three stages of n basic blocks with width,
    2·width and 4·width channels (stride 2 into the second and third), global average pooling and
    a linear layer. depth = 6n + 2 counts the weight layers: ResNet-20 is n = 3."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, depth: int, width: int):
        super().__init__()
        _need_images(self, input_shape)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            blocks = [BasicBlock(c_in if b == 0 else c_out, c_out, 2 if i > 0 and b == 0 else 1) for b in range(n)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.pool(self.stages(self.stem(x))).flatten(1))


class Recurrent(nn.Module):
    """A recurrent net that reads a sequence x_1..x_T ([N, T, F]; an image is read row by row) and
    classifies from its last state h_T.

    Stacked torch cells (nn.RNNCell with tanh, nn.LSTMCell, nn.GRUCell), stepped one time step at a
    time: the leaky unit h_t = α·h_(t-1) + (1 − α)·h̃_t mixes each new state h̃_t of the plain cell
    with the previous one, and with `record_states` each top-layer state h_t is kept so that
    trainer.diagnostics can read ∂L/∂h_t, the gradient that reaches step t.
    """

    def __init__(
        self, *, input_shape: tuple[int, ...], num_classes: int, cell: str, hidden: int, layers: int, leaky: float
    ):
        super().__init__()
        if len(input_shape) == 3:  # an image: T = height steps of channels x width values
            input_shape = (input_shape[1], input_shape[0] * input_shape[2])
        if len(input_shape) != 2:
            raise ConfigError(
                f"Recurrent needs sequences (steps x features) or images, and this data has inputs of "
                f"shape {tuple(input_shape)}; use image data such as data=mnist"
            )
        make = {
            "rnn": lambda i: nn.RNNCell(i, hidden, nonlinearity="tanh"),
            "lstm": lambda i: nn.LSTMCell(i, hidden),
            "gru": lambda i: nn.GRUCell(i, hidden),
        }[cell]
        self.cell, self.hidden, self.leaky = cell, hidden, leaky
        self.cells = nn.ModuleList(make(input_shape[1] if layer == 0 else hidden) for layer in range(layers))
        self.output = nn.Linear(hidden, num_classes)
        self.record_states = False
        self.states: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # [N, C, H, W] -> [N, H, C*W]
            x = x.permute(0, 2, 1, 3).flatten(2)
        n = x.shape[0]
        h = [x.new_zeros(n, self.hidden) for _ in self.cells]
        c = [x.new_zeros(n, self.hidden) for _ in self.cells] if self.cell == "lstm" else None
        self.states = []
        for t in range(x.shape[1]):
            below = x[:, t]
            for layer, cell in enumerate(self.cells):
                if c is not None:
                    h[layer], c[layer] = cell(below, (h[layer], c[layer]))
                elif self.leaky:
                    h[layer] = self.leaky * h[layer] + (1 - self.leaky) * cell(below, h[layer])
                else:
                    h[layer] = cell(below, h[layer])
                below = h[layer]
            if self.record_states and below.requires_grad:
                below.retain_grad()
                self.states.append(below)
        return self.output(h[-1])


def _need_images(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or min(input_shape[1:]) < 8:
        raise ConfigError(
            f"{type(model).__name__} needs images (channels x height x width, at least 8x8 pixels) "
            f"and this data has inputs of shape {tuple(input_shape)}; use model=mlp for it, or image "
            "data such as data=mnist"
        )


def build_model(spec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model a config names by `_target_`, called with input_shape, num_classes and the config's keys,
    then tried on one dummy batch, so a user's class that does not fit fails here in one line."""
    from hydra.utils import instantiate

    target = target_of(spec)
    for key in ("input_shape", "num_classes"):
        if key in kwargs_of(spec):
            raise ConfigError(f"model.{key} is set by dlcli from the data; remove it from the model config")
    cls = import_target(target, "model._target_", "put its module in the folder you run dlcli from or on PYTHONPATH")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(
            f"model._target_={target} is not a torch.nn.Module class ({type(cls).__name__}); "
            "name a class that subclasses torch.nn.Module"
        )
    try:  # Hydra builds what the keys nest (a user's own sub-configs with targets of their own)
        model = cls(
            input_shape=tuple(input_shape), num_classes=num_classes, **instantiate(kwargs_of(spec), _convert_="all")
        )
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"model._target_={target} rejected its arguments ({type(exc).__name__}: "
            f"{first_line(exc)}); dlcli passes input_shape={tuple(input_shape)} and "
            f"num_classes={num_classes}, the other keys come from model.*"
        ) from None
    _try_one_batch(model, target, input_shape, num_classes)
    return model


def on_device(spec, data, device: torch.device, channels_last: bool):
    """The model `spec` names, built for `data` and moved to `device`, and the data as that model takes
    it: a CNN on CUDA gets NHWC weights and batches (trainer.channels_last), in a copy of the bundle."""
    model = build_model(spec, data.input_shape, data.num_classes).to(device)
    if channels_last and device.type == "cuda" and len(data.input_shape) == 3:
        return model.to(memory_format=torch.channels_last), dataclasses.replace(data, channels_last=True)
    return model, data


def _try_one_batch(model: nn.Module, target: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise ConfigError(
            f"model {target} failed on a batch of shape {(2, *input_shape)} ({type(exc).__name__}: "
            f"{first_line(exc)}); it must map [N, {', '.join(map(str, input_shape))}] inputs to "
            f"[N, {num_classes}] logits"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model {target} returned {shape} for a batch of shape {(2, *input_shape)}, expected "
            f"(2, {num_classes}): one logit per class"
        )


# each of settings.INITS but "default" (torch's own initialization): how it fills a weight
WEIGHT_FILLS = {
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
    "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
    "normal": lambda w: nn.init.normal_(w, std=0.01),
}


def init_weights(model: nn.Module, scheme: str) -> None:
    """Re-initialize weight matrices and kernels by `scheme`; biases start at zero."""
    if scheme == "default":
        return
    fill = WEIGHT_FILLS[scheme]
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fill(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
