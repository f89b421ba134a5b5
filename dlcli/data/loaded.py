"""What every data source returns: whole splits as CPU tensors, with class names and statistics."""

from dataclasses import dataclass

import torch


@dataclass
class Loaded:
    """A dataset as a loader returns it: whole splits as CPU tensors, before the validation split and the device."""

    train_x: torch.Tensor  # uint8 [N, C, H, W] images, or float32 [N, F] features
    train_y: torch.Tensor  # int64 [N], class indices 0..K-1
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]  # class names, index = label
    mean: list[float]  # per channel in [0, 1] pixel units for images; per feature for tables (training split)
    std: list[float]  # idem, every value > 0
    features: tuple[str, ...] | None = None  # a table's feature names, in column order, when it has them
