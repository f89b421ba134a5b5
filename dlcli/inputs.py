"""A checkpoint's model as something to use: rebuilt from the checkpoint alone, fed new inputs prepared
the way the training data was (dlcli predict), or wrapped with that preparation for export.

The checkpoint's `inputs` record (DataBundle.record) says how: images as float pixels in [0, 1],
N×C×H×W, then (x - mean) / std per channel, then read as a sequence for recurrent models; table
rows as raw features, then (x - mean) / std per feature. `Prepared` puts that in front of the model,
so what it takes is what a user has: pixels in [0, 1], or feature rows as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dlcli.data.folders import IMAGE_EXTENSIONS
from dlcli.data.scan import Scan
from dlcli.errors import ConfigError, DataError, first_line
from dlcli.files import check_regular, open_regular
from dlcli.machine import resolve_device
from dlcli.settings import ImageFolderSettings, load_settings


@dataclass
class Restored:
    """A checkpoint's model (in eval mode, with its input preparation in front) and what it was trained on."""

    model: nn.Module  # Prepared: takes pixels in [0, 1] or raw feature rows
    record: dict  # DataBundle.record: kind, shape, mean, std, sequence, classes, features
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.record["classes"]


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


def restore(path: Path, allow: list[str], device: str = "cpu") -> Restored:
    """The checkpoint's model on `device` (trainer.device's values), with its preparation; one line if it
    cannot be rebuilt."""
    from dlcli.checkpoint import config_to_rebuild, load_checkpoint, load_weights
    from dlcli.data import sequence_shape
    from dlcli.models import build_model

    state = load_checkpoint(path)
    config = config_to_rebuild(state, path, allow)
    config["trainer"]["device"] = device  # checked with the rest
    settings = load_settings(config)
    record = state.get("inputs") or _record_from_data(settings)
    input_shape = sequence_shape(tuple(record["shape"]), record.get("sequence"))
    model = build_model(settings.model, input_shape, len(record["classes"]))
    load_weights(model, state, path)
    where = resolve_device(settings.trainer.device)
    # float32, as it was trained, whatever torch's default dtype in the caller's process
    return Restored(Prepared(model, record).float().eval().to(where), record, where)


def _record_from_data(settings) -> dict:
    """For checkpoints from before the record was kept: load the data as training did and ask it."""
    from dlcli.data import load_data

    t = settings.trainer
    return load_data(settings.data, t.seed, t.val_fraction, torch.device("cpu")).record()


def read_inputs(
    path: Path, record: dict, max_pixels: int = ImageFolderSettings.max_pixels
) -> tuple[list[str], torch.Tensor]:
    """(a name per input, the inputs): an image, a folder of images, an .npy array or a CSV, as floats
    the Prepared model takes. One line for anything it cannot use; images of more than `max_pixels`
    pixels are refused before they are decoded."""
    check_regular(path, "inputs", "an image, a folder of images, an .npy array or a .csv table")
    if path.is_dir():
        _needs(record, "images", path)
        files = _images_under(path)
        names, x = [f.relative_to(path).as_posix() for f in files], _images(files, record, max_pixels)
    elif path.suffix.lower() == ".npy":
        names, x = _array(path, record)
    elif path.suffix.lower() == ".csv":
        names, x = _table(path, record)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        _needs(record, "images", path)
        names, x = [str(path)], _images([path], record, max_pixels)
    else:
        raise DataError(
            f"inputs={path} is not an input dlcli can read: give an image "
            f"({', '.join(IMAGE_EXTENSIONS)}), a folder of images, an .npy array or a .csv table"
        )
    if len(x) == 0:
        raise DataError(f"inputs={path} holds no samples; give at least one")
    return names, x


def _images_under(folder: Path) -> list[Path]:
    """The images under `folder`, nested ones included, hidden ones not, each real file once (see dlcli.data.scan)."""
    scan = Scan(folder, IMAGE_EXTENSIONS)
    found = scan.files_under(folder)
    scan.skipped.report(f"inputs={folder}")
    if not found:
        raise DataError(
            f"inputs={folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); point it at an image or a folder of them"
        )
    return sorted(found)


def _images(files: list[Path], record: dict, max_pixels: int) -> torch.Tensor:
    """Decoded, converted and resized as the image-folder loader does for training, as pixels in [0, 1]."""
    from dlcli.data.folders import decode_all

    channels, height, width = record["shape"]
    return decode_all(files, channels, (height, width), max_pixels, "max_pixels").float() / 255


def _array(path: Path, record: dict) -> tuple[list[str], torch.Tensor]:
    import numpy as np

    try:
        with open_regular(path) as f:
            array = np.load(f, allow_pickle=False)  # loading a pickle could run code
    except ValueError as exc:
        if "pickle" not in str(exc) and "Object arrays" not in str(exc):
            raise DataError(
                f"inputs={path} could not be read as an .npy array ({_first(exc)}); save it with np.save"
            ) from None
        raise DataError(
            f"inputs={path} is a Python pickle or an array of Python objects, not an .npy array of "
            "numbers: dlcli does not unpickle files, as that can run code; save a numeric array with "
            "np.save(path, array)"
        ) from None
    except Exception as exc:
        raise DataError(
            f"inputs={path} could not be read as an .npy array ({_first(exc)}); save it with np.save"
        ) from None
    if array.dtype.kind not in "uif":
        raise DataError(f"inputs={path} holds {array.dtype} values; it needs numbers")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"inputs={path} holds NaN or infinite values; every value needs to be a finite number")
    shape = tuple(record["shape"])
    x = torch.from_numpy(np.ascontiguousarray(array))
    if record["kind"] == "images":
        x = _image_batch(x, shape, path, array.shape)
        if array.dtype.kind in "ui":  # whole numbers are 8-bit pixel values
            if array.size and (array.min() < 0 or array.max() > 255):
                raise DataError(
                    f"inputs={path} holds integers outside 0-255; give 8-bit pixel values, or floats in [0, 1]"
                )
            x = x.float() / 255
        else:
            if array.size and (array.min() < 0 or array.max() > 1):
                raise DataError(
                    f"inputs={path} holds floats outside [0, 1] (from {array.min():g} to "
                    f"{array.max():g}); give pixels in [0, 1] (divide 0-255 values by 255), or uint8"
                )
            x = x.float()
    else:
        x = x.float().reshape(1, -1) if x.dim() == 1 else x.float()
        _feature_count(x, record, path)
    return [f"{path.name}[{i}]" for i in range(len(x))], x


def _image_batch(x: torch.Tensor, shape: tuple[int, ...], path: Path, given: tuple[int, ...]) -> torch.Tensor:
    """N×C×H×W from N×C×H×W, C×H×W (one image), or, for one channel, N×H×W or H×W."""
    if x.dim() == 2 and shape[0] == 1:
        x = x[None, None]
    elif x.dim() == 3 and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:
        x = x.unsqueeze(1)
    elif x.dim() == 3:
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != shape:
        raise DataError(
            f"inputs={path} has shape {tuple(given)}; this model takes images of shape "
            f"N×{'×'.join(map(str, shape))} (pixels 0-255 as uint8, or floats in [0, 1])"
        )
    return x


def _table(path: Path, record: dict) -> tuple[list[str], torch.Tensor]:
    """A CSV of feature rows. If the model's data named its columns, they are taken by name from a
    header row (others, such as the label, are left out); else every column, in order, with or
    without a header row."""
    import numpy as np

    from dlcli.data.tables import is_number, read_rows

    _needs(record, "features", path)
    rows, _ = read_rows(path)
    head = [cell.strip() for cell in rows[0]]
    names = record.get("features")
    if names:
        missing = [n for n in names if n not in head]
        if missing:
            raise DataError(
                f"inputs={path} lacks the feature columns {', '.join(missing[:10])} in its header row; "
                f"it needs every column the model was trained on: {', '.join(names[:20])}"
            )
        columns, first = [head.index(n) for n in names], 1
    else:
        header = any(c and not is_number(c) for c in head)  # a row with an empty cell is data (and refused)
        columns, first = list(range(len(head))), 1 if header else 0
    values = np.full((len(rows) - first, len(columns)), np.nan, dtype=np.float32)
    for i, row in enumerate(rows[first:]):
        try:
            values[i] = [float(row[c]) for c in columns]
        except (ValueError, IndexError):
            raise DataError(
                f"inputs={path} row {first + i + 1} has a missing or non-numeric feature value; every "
                "feature needs a number"
            ) from None
    if not np.isfinite(values).all():
        raise DataError(f"inputs={path} holds NaN or infinite values; every feature needs a finite number")
    x = torch.from_numpy(values)
    _feature_count(x, record, path)
    return [f"{path.name}:{first + i + 1}" for i in range(len(x))], x


def _first(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"


def _feature_count(x: torch.Tensor, record: dict, path: Path) -> None:
    wanted = record["shape"][0]
    if x.dim() != 2 or x.shape[1] != wanted:
        got = x.shape[1] if x.dim() == 2 else f"shape {tuple(x.shape)}"
        raise DataError(
            f"inputs={path} has {got} features per row; this model takes {wanted} (one row per "
            "sample, as in its training data)"
        )


def _needs(record: dict, kind: str, path: Path) -> None:
    if record["kind"] != kind:
        takes = (
            "images: an image file, a folder of them or an .npy array"
            if record["kind"] == "images"
            else "feature rows: a .csv table or an .npy array"
        )
        raise ConfigError(f"inputs={path} holds {kind}, but this model takes {takes}")
