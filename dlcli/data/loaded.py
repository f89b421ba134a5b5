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
    # dlcli's image caches: train_x and test_x are one memory-mapped store of every image, each split
    # these rows of it (int64, ascending), so that no split is copied before data.storage is chosen
    train_rows: torch.Tensor | None = None
    test_rows: torch.Tensor | None = None

    @property
    def train_samples(self) -> torch.Tensor:
        """The training split's samples in memory (a copy, when they are rows of a store)."""
        return self.train_x if self.train_rows is None else self.train_x[self.train_rows]

    @property
    def test_samples(self) -> torch.Tensor:
        return self.test_x if self.test_rows is None else self.test_x[self.test_rows]
