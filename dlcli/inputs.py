"""A checkpoint's model as something to use: rebuilt from the checkpoint alone, fed new inputs prepared
the way the training data was (dlcli predict), or wrapped with that preparation for export.

The checkpoint's `inputs` record (DataBundle.record) says how: images as float pixels in [0, 1],
N×C×H×W, then (x - mean) / std per channel, then read as a sequence for recurrent models; table
rows as raw features, then (x - mean) / std per feature. `Prepared` puts that in front of the model,
so what it takes is what a user has: pixels in [0, 1], or feature rows as they are.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dlcli.errors import CheckpointError, ConfigError, DataError
from dlcli.folders import IMAGE_EXTENSIONS
from dlcli.settings import check_targets, load_settings


@dataclass
class Restored:
    """A checkpoint's model (in eval mode, with its input preparation in front) and what it was trained on."""

    model: nn.Module  # Prepared: takes pixels in [0, 1] or raw feature rows
    record: dict  # DataBundle.record: kind, shape, mean, std, sequence, classes, features
    settings: object
    state: dict

    @property
    def classes(self) -> list[str]:
        return self.record["classes"]

    @property
    def shape(self) -> tuple[int, ...]:
        """What one input is: (C, H, W) pixels or (F,) features."""
        return tuple(self.record["shape"])


class Prepared(nn.Module):
    """The model with the training data's normalization (and sequence reading) in front of it."""

    def __init__(self, model: nn.Module, record: dict) -> None:
        super().__init__()
        self.model = model
        self.sequence = record.get("sequence") or ""
        mean = torch.tensor(record["mean"], dtype=torch.float32)
        std = torch.tensor(record["std"], dtype=torch.float32)
        if record["kind"] == "images":
            mean, std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.sequence == "rows":  # [N, C, H, W] -> [N, H, C*W], as dlcli.data does it
            x = x.permute(0, 2, 1, 3).flatten(2)
        elif self.sequence == "pixels":  # -> [N, H*W, C]
            x = x.flatten(2).transpose(1, 2)
        return self.model(x)


def restore(path: Path, allow: list[str]) -> Restored:
    """The checkpoint's model on the CPU, with its preparation; one line if it cannot be rebuilt."""
    from dlcli.checkpoint import load_checkpoint, load_weights
    from dlcli.models import build_model

    state = load_checkpoint(path)
    config = state["config"]
    if not isinstance(config, dict) or state["format"] < 3:
        raise CheckpointError(f"checkpoint {path} holds no config that names its model (written by dlcli "
                              f"{state.get('dlcli_version')}); train it again")
    config = {**config, "trainer": {**config["trainer"], "resume": None}}
    config.pop("logger", None)  # where the run was tracked does not matter here
    if allow and os.getcwd() not in sys.path:  # the allowed modules may sit in the folder dlcli runs from
        sys.path.insert(0, os.getcwd())
    check_targets(config, allow, f"checkpoint {path}")
    settings = load_settings(config)
    record = state.get("inputs") or _record_from_data(settings)
    from dlcli.data import sequence_shape

    input_shape = sequence_shape(tuple(record["shape"]), record.get("sequence"))
    model = build_model(settings.model, input_shape, len(record["classes"]))
    load_weights(model, state, path)
    return Restored(Prepared(model, record).eval(), record, settings, state)


def _record_from_data(settings) -> dict:
    """For checkpoints from before the record was kept: load the data as training did and ask it."""
    from dlcli.data import load_data

    t = settings.trainer
    return load_data(settings.data, t.seed, t.val_fraction, torch.device("cpu")).record()


def read_inputs(path: Path, record: dict) -> tuple[list[str], torch.Tensor]:
    """(a name per input, the inputs): an image, a folder of images, an .npy array or a CSV, as floats
    the Prepared model takes. One line for anything it cannot use."""
    if path.is_dir():
        _needs(record, "images", path)
        files = _images_under(path)
        return [str(f) for f in files], _images(files, record)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _array(path, record)
    if suffix == ".csv":
        return _table(path, record)
    if suffix in IMAGE_EXTENSIONS:
        return [str(path)], _images([path], record)
    raise DataError(f"inputs={path} is not an input dlcli can read: give an image ({', '.join(IMAGE_EXTENSIONS)}), "
                    "a folder of images, an .npy array or a .csv table")


def _images_under(folder: Path) -> list[Path]:
    found = sorted(Path(parent, name) for parent, dirs, names in os.walk(folder, followlinks=True)
                   for name in names if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"inputs={folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); point it at an image "
                        "or a folder of them")
    return found


def _images(files: list[Path], record: dict) -> torch.Tensor:
    from dlcli.folders import _decode_file

    _needs(record, "images", files[0])
    channels, height, width = record["shape"]
    pixels = torch.stack([_decode_file(f, channels, (height, width)) for f in files])
    return pixels.float() / 255


def _array(path: Path, record: dict) -> tuple[list[str], torch.Tensor]:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"inputs={path} could not be read as an .npy array ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}); save it with np.save") from None
    if array.dtype.kind not in "uif" or array.dtype == np.bool_:
        raise DataError(f"inputs={path} holds {array.dtype} values; it needs numbers")
    shape = tuple(record["shape"])
    x = torch.from_numpy(np.ascontiguousarray(array))
    if record["kind"] == "images":
        if x.dim() == 2:  # one image, H×W
            x = x[None]
        if x.dim() == 3 and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:  # gray images, N×H×W
            x = x.unsqueeze(1)
        elif x.dim() == 3:  # one image, C×H×W
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != shape:
            raise DataError(f"inputs={path} has shape {tuple(array.shape)}; this model takes images of shape "
                            f"N×{'×'.join(map(str, shape))} (pixels 0-255 as uint8, or floats in [0, 1])")
        x = x.float() / 255 if array.dtype == np.uint8 else x.float()
    else:
        x = x.float().reshape(1, -1) if x.dim() == 1 else x.float()
        _feature_count(x, record, path)
    return [f"{path.name}[{i}]" for i in range(len(x))], x


def _table(path: Path, record: dict) -> tuple[list[str], torch.Tensor]:
    """A CSV of feature rows: columns by name if the model's data had names (other columns, such as
    the label, are left out), else every column, in order; a header row is optional then."""
    import numpy as np

    from dlcli.tabular import _read_rows

    _needs(record, "features", path)
    rows, _ = _read_rows(path)
    names = record.get("features")
    head = [cell.strip() for cell in rows[0]]
    has_header = not _numbers(head)
    if names:
        if not has_header:
            raise DataError(f"inputs={path} has no header row; the model was trained on named columns "
                            f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}): add that header")
        missing = [n for n in names if n not in head]
        if missing:
            raise DataError(f"inputs={path} lacks the feature columns {', '.join(missing[:10])}; it needs every "
                            f"column the model was trained on: {', '.join(names[:20])}")
        columns = [head.index(n) for n in names]
    else:
        columns = list(range(len(head)))
    body = rows[1:] if has_header else rows
    try:
        x = np.array([[float(row[c]) for c in columns] for row in body], dtype=np.float32)
    except (ValueError, IndexError):
        raise DataError(f"inputs={path} has a row with a missing or non-numeric feature value; every feature "
                        "needs a number") from None
    x = torch.from_numpy(x.reshape(len(body), len(columns)))
    _feature_count(x, record, path)
    first = 2 if has_header else 1
    return [f"{path.name}:{first + i}" for i in range(len(x))], x


def _numbers(cells: list[str]) -> bool:
    try:
        [float(c) for c in cells]
    except ValueError:
        return False
    return True


def _feature_count(x: torch.Tensor, record: dict, path: Path) -> None:
    wanted = record["shape"][0]
    if x.dim() != 2 or x.shape[1] != wanted:
        got = x.shape[1] if x.dim() == 2 else f"shape {tuple(x.shape)}"
        raise DataError(f"inputs={path} has {got} features per row; this model takes {wanted} (one row per "
                        "sample, as in its training data)")


def _needs(record: dict, kind: str, path: Path) -> None:
    if record["kind"] != kind:
        takes = ("images: an image file, a folder of them or an .npy array" if record["kind"] == "images"
                 else "feature rows: a .csv table or an .npy array")
        raise ConfigError(f"inputs={path} holds {kind}, but this model takes {takes}")
