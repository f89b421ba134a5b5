"""2-D toy classification sets generated in-process (as in the TensorFlow playground)."""

import math

import torch

from dlcli.data.loaded import Loaded


def load_toy(name: str, n_samples: int, noise: float, classes: int | None, seed: int):
    """The toy set as dlcli.data.Loaded; the test points are drawn independently of the training points."""
    k = classes or (3 if name == "spirals" else 2)
    train_x, train_y = make_toy(name, n_samples, noise, k, torch.Generator().manual_seed(seed))
    test_x, test_y = make_toy(name, max(n_samples // 4, 100), noise, k, torch.Generator().manual_seed(seed + 7919))
    # points are used as they are: the mean/std that leave them unchanged
    return Loaded(train_x, train_y, test_x, test_y, tuple(str(c) for c in range(k)), [0.0, 0.0], [1.0, 1.0])


def make_toy(
    name: str, n: int, noise: float, classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (points float32 [n, 2], labels int64 [n]) with balanced classes."""
    y = torch.arange(n) % classes
    u = torch.rand(n, generator=generator)
    if name == "spirals":
        # one arm per class: radius grows with u while the angle turns 1.75 rounds
        r = 0.1 + 0.9 * u
        theta = 2 * math.pi * (y / classes + 0.875 * u)
        x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
        noise = noise * 0.5
    elif name == "moons":
        theta = math.pi * u
        upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
        lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
        x = torch.where((y == 0)[:, None], upper, lower) - torch.tensor([0.5, 0.25])
    elif name == "circles":
        theta = 2 * math.pi * u
        r = torch.where(y == 0, 1.0, 0.5)
        x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1)
    elif name == "xor":
        x = torch.rand(n, 2, generator=generator) * 2 - 1
        # keep points off the axes so the quadrants are separable despite noise
        x = x + 0.1 * torch.sign(x)
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    else:
        raise ValueError(f"unknown toy set {name!r}")
    x = x + noise * torch.randn(n, 2, generator=generator)
    return x.float(), y
