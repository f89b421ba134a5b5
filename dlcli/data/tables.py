"""Users' own tables: a CSV file with a header row, or an .npz file of arrays.

Also home of `Loaded`, what every loader of the user's own data returns (images too, see
dlcli/folders.py), and of the helpers they share: the seeded stratified test split and the
label encoding. Loaders are pure: explicit arguments in, CPU tensors out; the validation split,
normalization and the device are the caller's business.

A CSV is read whole into memory by the csv module (C code; no Python loop per row or cell), so
tables of up to a few hundred MB are fine; bigger ones are better saved as .npz.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from operator import itemgetter
from pathlib import Path

import numpy as np
import torch

from dlcli.data.loaded import Loaded
from dlcli.errors import ConfigError, DataError
from dlcli.files import check_regular, kind

_NPZ_HINT = "save it with np.savez(path, x=features, y=labels) (optionally x_test=..., y_test=...)"


def load_csv(
    path: str | Path, label: str, test_fraction: float = 0.2, seed: int = 0, test_path: str | Path | None = None
) -> Loaded:
    """A CSV table: the column named `label` holds the classes (names or integers), every other
    column is a numeric feature. Without `test_path`, a seeded stratified `test_fraction` of the rows
    is the test split; with it, that file (same columns, any order) is."""
    if not isinstance(label, str) or not label:
        raise ConfigError(f"data.label={label!r} is invalid: the name of the label column in the CSV header")
    check_fraction(test_fraction)
    check_regular(Path(path).expanduser(), "data.path", "a CSV file")
    if test_path is not None:
        check_regular(Path(test_path).expanduser(), "data.test_path", "a CSV file")
    names, x, raw_y = _read_table(Path(path).expanduser(), label)
    if test_path is None:
        y, _, classes = encode_labels(raw_y, None, f"column {label!r} of {path}")
        return _loaded(*hold_out(x, y, test_fraction, seed, str(path)), classes, names)
    test_names, test_x, raw_test_y = _read_table(Path(test_path).expanduser(), label)
    if set(test_names) != set(names):
        raise DataError(
            f"{test_path} has other feature columns than {path}: {_difference(names, test_names)}; "
            "give both files the same columns (their order may differ)"
        )
    test_x = test_x[:, [test_names.index(n) for n in names]]  # the training file's column order
    y, test_y, classes = encode_labels(raw_y, raw_test_y, f"column {label!r} of {path}", f"{test_path}")
    return _loaded(x, y, test_x, test_y, classes, names)


def load_arrays(path: str | Path, test_fraction: float = 0.2, seed: int = 0) -> Loaded:
    """An .npz file with `x` (numbers, [N, F]) and `y` ([N], class ids or names), optionally `x_test`
    and `y_test`; without them a seeded stratified `test_fraction` of the rows is the test split.

    Only 2-D features: images belong in an image folder, anything else is reshaped by the user,
    who knows what its axes mean."""
    check_fraction(test_fraction)
    where = Path(path).expanduser()
    check_regular(where, "data.path", "an .npz file")
    arrays = _read_npz(where)
    x, raw_y = _features(arrays, "x", where), _labels(arrays, "y", where)
    _same_length(x, raw_y, "x", "y", where)
    if "x_test" not in arrays:
        y, _, classes = encode_labels(raw_y, None, f"y in {where}")
        return _loaded(*hold_out(x, y, test_fraction, seed, str(where)), classes)
    test_x, raw_test_y = _features(arrays, "x_test", where), _labels(arrays, "y_test", where)
    _same_length(test_x, raw_test_y, "x_test", "y_test", where)
    if test_x.shape[1] != x.shape[1]:
        raise DataError(
            f"x_test in {where} has {test_x.shape[1]} features, x has {x.shape[1]}: the test rows "
            "need the same features as the training rows; " + _NPZ_HINT
        )
    y, test_y, classes = encode_labels(raw_y, raw_test_y, f"y in {where}", f"y_test in {where}")
    return _loaded(x, y, test_x, test_y, classes)


# --- shared by the image and table loaders ------------------------------------------------


def check_fraction(test_fraction: float) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ConfigError(
            f"data.test_fraction={test_fraction!r} is invalid: a fraction in (0, 1) of the training "
            "data to hold out as the test split when the data has no test split of its own"
        )


def split_test(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows), each in ascending order: about `fraction` of every class goes to the
    test split, at least one row of each class with two or more, never a class's last row."""
    n = len(y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # group the shuffled rows by class; a stable sort keeps the random order within each class
    order = perm[torch.sort(y[perm], stable=True).indices]
    counts = torch.bincount(y)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts.repeat_interleave(counts)  # position of each row within its class
    n_test = torch.minimum((counts * fraction).round().long().clamp(min=1), counts - 1)
    test = torch.zeros(n, dtype=torch.bool)
    test[order[rank < n_test.repeat_interleave(counts)]] = True
    return (~test).nonzero().squeeze(1), test.nonzero().squeeze(1)  # a mask keeps the file order, no sort needed


def held_out_rows(y: torch.Tensor, fraction: float, seed: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows) of a seeded stratified test split, or one line when none can be held out."""
    train, test = split_test(y, fraction, seed)
    if len(test) == 0:
        raise DataError(
            f"{where} has only one sample per class ({len(y)} in all): none can be set aside as the "
            "test split; add samples, or give a test split of its own"
        )
    return train, test


def hold_out(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, where: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y): a seeded stratified test split carved out of (x, y)."""
    train, test = held_out_rows(y, fraction, seed, where)
    return x[train], y[train], x[test], y[test]


def encode_labels(
    train: np.ndarray, test: np.ndarray | None, where: str, test_where: str = ""
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[str, ...]]:
    """Class indices of the training labels (and of the test labels), and the class names: the
    sorted distinct training labels, numerically when every label is a whole number."""
    train, test = _common_kind(train, test)
    values, y = np.unique(train, return_inverse=True)
    if len(values) < 2:
        raise DataError(
            f"{where} holds one class only ({values[0]!s}): a classifier needs at least two; "
            "check that the right column or file was chosen"
        )
    classes = tuple(str(v) for v in values)
    if test is None:
        return torch.from_numpy(y.astype(np.int64)), None, classes
    pos = np.searchsorted(values, test).clip(max=len(values) - 1)
    unseen = np.unique(test[values[pos] != test])
    if unseen.size:
        raise DataError(
            f"{test_where} has labels the training data lacks: {_some(unseen)} (training classes: "
            f"{_some(values)}); a model cannot learn a class it never sees: fix or drop those rows"
        )
    return torch.from_numpy(y.astype(np.int64)), torch.from_numpy(pos.astype(np.int64)), classes


def _common_kind(train: np.ndarray, test: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both as int64 when every label of both is a whole number, else both as stripped strings."""
    ints = [_whole_numbers(a) for a in (train, test) if a is not None]
    if all(a is not None for a in ints):
        return ints[0], ints[1] if test is not None else None
    as_text = [np.char.strip(a.astype(str)) for a in (train, test) if a is not None]
    return as_text[0], as_text[1] if test is not None else None


def _whole_numbers(labels: np.ndarray) -> np.ndarray | None:
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels).all() and (labels == np.round(labels)).all()
        return labels.astype(np.int64) if whole else None
    try:
        return np.fromiter(map(int, labels.astype(str)), dtype=np.int64, count=len(labels))
    except (ValueError, OverflowError):
        return None


def _loaded(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classes: tuple[str, ...],
    features: list[str] | None = None,
) -> Loaded:
    mean, std = feature_stats(train_x)
    return Loaded(train_x, train_y, test_x, test_y, classes, mean, std, tuple(features) if features else None)


def feature_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-feature mean and std (population) of float features [N, F], in float64; 1.0 for the std of a
    constant feature, which scaling must leave alone."""
    std, mean = torch.std_mean(x.double(), dim=0, correction=0)
    constant = x.amax(0) == x.amin(0)  # exact, unlike a tolerance on a rounded std
    return mean.tolist(), torch.where(constant, 1.0, std).tolist()


def _some(values, limit: int = 10) -> str:
    shown = [str(v) for v in values[:limit]]
    return ", ".join(shown) + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _difference(expected: list[str], got: list[str]) -> str:
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    return "; ".join(
        part for part in (missing and f"missing {_some(missing)}", extra and f"extra {_some(extra)}") if part
    )


# --- CSV ----------------------------------------------------------------------------------


def _read_table(path: Path, label: str) -> tuple[list[str], torch.Tensor, np.ndarray]:
    """(feature column names, float32 features [N, F], raw labels [N] as strings) of one CSV file."""
    rows, delimiter = read_rows(path)
    header = [name.strip() for name in rows[0]]
    duplicates = sorted(n for n, count in Counter(header).items() if count > 1)
    if duplicates:
        raise DataError(
            f"{path} has the column name {_some(duplicates)} more than once; give every column "
            "of the header row its own name"
        )
    if label not in header:
        raise DataError(
            f"{path} has no column {label!r} (columns: {_some(header, 20)}); name the label column "
            "with data.label=COLUMN, spelled as in the header row"
        )
    body = rows[1:]
    if not body:
        raise DataError(f"{path} has a header row but no data rows; add the data, one row per sample")
    lengths = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    ragged = np.flatnonzero(lengths != len(header))
    if ragged.size:
        k = int(ragged[0])
        raise DataError(
            f"{path} line {_line_of(path, delimiter, k)} has {lengths[k]} fields, the header has "
            f"{len(header)}: every row needs one value per column (quote values that contain "
            f"{delimiter!r})"
        )
    label_at = header.index(label)
    names = [n for i, n in enumerate(header) if i != label_at]
    if not names:
        raise DataError(f"{path} has only the label column {label!r}: add at least one numeric feature column")
    labels = np.char.strip(np.array(list(map(itemgetter(label_at), body)), dtype=str))
    # "nan" is how pandas and spreadsheets write a missing value: not a class to learn
    empty = np.flatnonzero((labels == "") | (np.char.lower(labels) == "nan"))
    if empty.size:
        k = int(empty[0])
        shown = f" (only {str(labels[k])!r}, which marks a missing value)" if labels[k] else ""
        raise DataError(
            f"{path} line {_line_of(path, delimiter, k)} has no label in column {label!r}{shown}: "
            "every row needs one; fill it in or drop the row"
        )
    columns = [_numbers(path, delimiter, body, i, header[i]) for i in range(len(header)) if i != label_at]
    return names, torch.from_numpy(np.stack(columns, axis=1)), labels


def read_rows(path: Path) -> tuple[list[list[str]], str]:
    """Every non-blank row, header first, and the delimiter (',', ';' or tab, whichever the header uses most)."""
    if not path.is_file():
        raise DataError(f"{path} {_not_a_file(path)}: expected a CSV file with a header row; point data.path at it")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets start UTF-8 files with a BOM
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text: is it really a CSV file? Save it as CSV in UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path} could not be read ({exc.strerror}); check its permissions") from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)
    try:
        rows = list(filter(None, csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True)))
    except csv.Error as exc:
        raise DataError(f"{path} is not a well-formed CSV file ({exc}); fix that line, e.g. close its quotes") from None
    if not rows:
        raise DataError(f"{path} is empty: expected a header row naming the columns, then one row per sample")
    return rows, delimiter


def _numbers(path: Path, delimiter: str, body: list[list[str]], column: int, name: str) -> np.ndarray:
    """One feature column as finite float32; else the first bad cell, named by line and column."""
    try:
        values = np.fromiter(map(float, map(itemgetter(column), body)), dtype=np.float64, count=len(body))
    except ValueError:  # the slow search runs only on this error path
        k, cell = next((k, row[column].strip()) for k, row in enumerate(body) if not is_number(row[column]))
        where = f"{path} line {_line_of(path, delimiter, k)}, column {name!r}"
        if not cell:
            raise DataError(f"{where} is empty: every feature needs a value; fill it in or drop the row") from None
        raise DataError(
            f"{where}: {cell!r} is not a number; every column but the label must be numeric: "
            "encode it as numbers or drop the column"
        ) from None
    with np.errstate(over="ignore"):  # through float64: a value beyond float32's range becomes inf, caught below
        values = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        k = int(bad[0])
        raise DataError(
            f"{path} line {_line_of(path, delimiter, k)}, column {name!r}: {body[k][column].strip()!r} "
            "is not a finite number (NaN or infinite, or beyond float32's range): fill in a real value "
            "or drop the row"
        )
    return values


def is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def _line_of(path: Path, delimiter: str, data_row: int) -> int:
    """The line number (1-based, as editors count) where data row `data_row` (0-based) starts."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, skipinitialspace=True)
        start, seen = 1, -1  # the header is row -1
        for row in reader:
            if row:
                seen += 1
                if seen == data_row + 1:
                    return start
            start = reader.line_num + 1
    return start


# --- .npz ---------------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} {_not_a_file(path)}: expected an .npz file; point data.path at it, or {_NPZ_HINT}")
    try:
        npz = np.load(path, allow_pickle=False)  # no pickles: loading data must not run code
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds a single array (.npy), not named arrays: {_NPZ_HINT}")
        with npz:
            arrays = {name: npz[name] for name in npz.files}
    except DataError:
        raise
    except ValueError as exc:
        if "Object arrays" not in str(exc):  # numpy took a file that is neither zip nor .npy for a pickle
            raise DataError(
                f"{path} is not a readable .npz file (neither a zip of arrays nor .npy); {_NPZ_HINT}"
            ) from None
        raise DataError(
            f"{path} holds arrays of Python objects, which dlcli does not unpickle: x must hold numbers "
            f"and y numbers or strings; {_NPZ_HINT}"
        ) from None
    except Exception as exc:  # not a zip file, truncated, ...
        raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); {_NPZ_HINT}") from None
    missing = [n for n in ("x", "y") if n not in arrays]
    if missing:
        raise DataError(
            f"{path} has no array {' or '.join(missing)} (arrays: {_some(sorted(arrays)) or 'none'}): "
            f"expected x [N, F] and y [N]; {_NPZ_HINT}"
        )
    for a, b in (("x_test", "y_test"), ("y_test", "x_test")):
        if a in arrays and b not in arrays:
            raise DataError(f"{path} has {a} but no {b}: give both, or neither to hold out a test fraction of x")
    return arrays


def _features(arrays: dict[str, np.ndarray], name: str, path: Path) -> torch.Tensor:
    x = arrays[name]
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{name} in {path} has dtype {x.dtype}: features must be numbers (bool, int or float); "
            "encode text as numbers first"
        )
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        hint = (
            "for one feature save x.reshape(-1, 1)"
            if x.ndim == 1
            else "flatten each sample yourself with x.reshape(len(x), -1), or save images as an image folder "
            "(data=image_folder)"
        )
        raise DataError(f"{name} in {path} has shape {x.shape}: expected features [N, F] with N, F > 0; {hint}")
    with np.errstate(over="ignore"):  # a value beyond float32's range becomes inf, caught below
        x = x.astype(np.float32)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        row, col = bad[0]
        raise DataError(
            f"{name} in {path} holds {x[row, col]} at row {row}, feature {col} ({len(bad)} non-finite "
            "in all): features must be finite numbers; fill in or drop those rows before saving"
        )
    return torch.from_numpy(x)


def _labels(arrays: dict[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    y = arrays[name]
    if y.ndim != 1:
        raise DataError(
            f"{name} in {path} has shape {y.shape}: expected one label per row [N] "
            "(e.g. save y.reshape(-1), or y.argmax(1) for one-hot labels)"
        )
    if y.dtype.kind not in "biuUS" and not (y.dtype.kind == "f" and _whole_numbers(y) is not None):
        raise DataError(
            f"{name} in {path} has dtype {y.dtype} with values that are not class ids: labels must be "
            "whole numbers or strings (class names)"
        )
    return y


def _same_length(x: torch.Tensor, y: np.ndarray, x_name: str, y_name: str, path: Path) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {x_name} has {len(x)} rows but {y_name} has {len(y)} labels: give one label per row")


def _not_a_file(path: Path) -> str:
    """What stands at a path that is no regular file, in words."""
    if not os.path.lexists(path):
        return "does not exist"
    return f"is a {kind(path.stat().st_mode)}, not a regular file" if path.exists() else "is a broken link"
