"""The loaders of users' own data: image folders, CSV tables and .npz arrays, written here as real files."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from dlcli.data import folders
from dlcli.data.folders import load_image_folder
from dlcli.data.tables import load_arrays, load_csv, split_test
from dlcli.errors import ConfigError, DataError, DlcliError


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_image(path, mode, size, value=None):
    """A small image of `mode` and (height, width) `size`: a gradient, or one `value` everywhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    grid = np.add.outer(np.arange(h) * 7, np.arange(w) * 13) % 256
    if mode == "I;16":
        pixels = np.full((h, w), value if value is not None else 40000, np.uint16)
        Image.fromarray(pixels).save(path)
        return
    base = np.full((h, w), value, np.uint8) if value is not None else grid.astype(np.uint8)
    rgb = Image.fromarray(np.stack([base, 255 - base, base // 2], axis=2))
    image = {"L": Image.fromarray(base), "RGB": rgb, "RGBA": rgb.convert("RGBA"), "P": rgb.convert("P")}[mode]
    image.save(path)


def one_line(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# --- image folders ------------------------------------------------------------------------


def split_folder(root):
    """train/ and test/ with classes cat and dog, mixed sizes, modes and formats; the first image is L 12x10."""
    write_image(root / "train/cat/a.png", "L", (12, 10))
    write_image(root / "train/cat/b.jpg", "RGB", (30, 20))
    write_image(root / "train/cat/nested/c.png", "P", (8, 8))
    write_image(root / "train/dog/a.png", "RGBA", (16, 16))
    write_image(root / "train/dog/b.png", "I;16", (9, 11))
    write_image(root / "train/dog/c.JPEG", "L", (40, 25))
    (root / "train/dog/notes.txt").write_text("not an image, skipped as ImageFolder skips it")
    write_image(root / "train/dog/.hidden.png", "L", (5, 5))
    write_image(root / "test/cat/x.jpg", "RGB", (24, 24))
    write_image(root / "test/dog/y.png", "RGBA", (7, 13))
    return root


def test_image_folder_with_train_and_test(tmp_path):
    data = load_image_folder(split_folder(tmp_path / "pets"))
    assert data.classes == ("cat", "dog")
    assert data.train_samples.dtype == torch.uint8 and data.train_samples.shape == (6, 1, 12, 10)  # inferred: L, 12x10
    assert data.test_samples.shape == (2, 1, 12, 10)
    assert data.train_y.dtype == torch.int64 and data.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test_y.tolist() == [0, 1]
    assert len(data.mean) == len(data.std) == 1
    assert 0 < data.mean[0] < 1 and 0 < data.std[0] < 1
    expected = data.train_samples.double() / 255
    assert data.mean[0] == pytest.approx(expected.mean().item())
    assert data.std[0] == pytest.approx(expected.std(correction=0).item())


def test_image_folder_channels_and_size_given(tmp_path):
    root = split_folder(tmp_path / "pets")
    square = load_image_folder(root, channels=3, image_size=8)
    assert square.train_samples.shape == (6, 3, 8, 8) and square.test_samples.shape == (2, 3, 8, 8)
    assert len(square.mean) == 3 and all(s > 0 for s in square.std)
    assert load_image_folder(root, channels=1, image_size=[6, 9]).train_samples.shape == (6, 1, 6, 9)


def test_color_first_image_infers_three_channels(tmp_path):
    for name, mode in (("a", "RGB"), ("b", "L")):
        for i in range(3):
            write_image(tmp_path / "img" / name / f"{i}.png", mode, (10 + i, 14))
    data = load_image_folder(tmp_path / "img")
    assert data.train_samples.shape[1:] == (3, 10, 14)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    for name in ("a", "b"):
        for i in range(2):
            write_image(tmp_path / "img" / name / f"{i}.png", "I;16", (4, 4), value=32768)
    data = load_image_folder(tmp_path / "img", test_fraction=0.5)
    assert data.train_samples.unique().tolist() == [128]  # PIL's own conversion would give 255
    assert data.std == [1.0]  # a constant channel keeps its scale


def test_without_test_folder_a_seeded_stratified_fraction_is_held_out(tmp_path):
    for name in ("a", "b", "c"):
        for i in range(5):
            write_image(tmp_path / "img" / name / f"{i}.png", "L", (6, 6), value=20 * i)
    data = load_image_folder(tmp_path / "img", test_fraction=0.2, seed=3)
    assert data.test_y.tolist() == [0, 1, 2] and data.train_y.bincount().tolist() == [4, 4, 4]
    again = load_image_folder(tmp_path / "img", test_fraction=0.2, seed=3)
    assert torch.equal(again.test_samples, data.test_samples) and torch.equal(again.train_samples, data.train_samples)
    seeds = {tuple(load_image_folder(tmp_path / "img", seed=s).test_samples[:, 0, 0, 0].tolist()) for s in range(6)}
    assert len(seeds) > 1


def test_second_load_reads_the_cache_and_a_changed_file_rebuilds_it(tmp_path, monkeypatch, own_cache):
    root = split_folder(tmp_path / "pets")
    first = load_image_folder(root)
    assert len(list(own_cache.glob("folder-pets-*[0-9a-f].npy"))) == 1

    def no_decoding(*args):
        raise AssertionError("decoded although the cache is current")

    monkeypatch.setattr(folders, "_decode_file", no_decoding)
    monkeypatch.setattr(folders, "_inspect", no_decoding)
    second = load_image_folder(root)
    assert torch.equal(second.train_samples, first.train_samples) and torch.equal(second.test_y, first.test_y)
    assert second.classes == first.classes and second.mean == first.mean

    source = root / "train/dog/a.png"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded"):
        load_image_folder(root)


def test_other_options_get_their_own_cache(tmp_path, own_cache):
    root = split_folder(tmp_path / "pets")
    load_image_folder(root)
    assert load_image_folder(root, channels=3, image_size=5).train_samples.shape[1:] == (3, 5, 5)
    assert load_image_folder(root).train_samples.shape[1:] == (1, 12, 10)
    assert len(list(own_cache.glob("*[0-9a-f].npy"))) == 2


def test_cache_lies_beside_the_folder_not_in_it(tmp_path, monkeypatch):
    monkeypatch.delenv("DLCLI_CACHE")
    root = split_folder(tmp_path / "pets")
    load_image_folder(root)
    assert [p.parent.name for p in (tmp_path / "dlcli-cache").glob("folder-pets-*[0-9a-f].npy")] == ["dlcli-cache"]
    assert not list(root.rglob("*.npy"))
    assert load_image_folder(root).classes == ("cat", "dog")


def test_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert set(folders.IMAGE_EXTENSIONS) == set(IMG_EXTENSIONS)


def bad_folder(tmp_path, case):
    root = tmp_path / "img"
    if case == "missing":
        return root
    root.mkdir()
    if case == "empty":
        return root
    if case == "images_in_root":
        write_image(root / "a.png", "L", (4, 4))
        return root
    write_image(root / "cat/a.png", "L", (4, 4))
    if case == "one_class":
        return root
    if case == "class_without_images":
        (root / "dog").mkdir()
        (root / "dog/readme.txt").write_text("x")
    elif case == "corrupt":
        write_image(root / "dog/a.png", "L", (4, 4))
        (root / "dog/b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    elif case == "truncated":
        write_image(root / "dog/a.jpg", "RGB", (32, 32))
        data = (root / "dog/a.jpg").read_bytes()
        (root / "dog/a.jpg").write_bytes(data[: len(data) // 2])
    elif case == "test_mismatch":
        for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "cow"))):
            for name in classes:
                write_image(root / split / name / "a.png", "L", (4, 4))
    elif case == "test_without_train":
        write_image(root / "test/cat/a.png", "L", (4, 4))
    return root


@pytest.mark.parametrize(
    "case, needles",
    [
        ("missing", ["img does not exist", "one sub-folder per class"]),
        ("empty", ["has no class folders", "it is empty"]),
        ("images_in_root", ["has no class folders", "1 image(s) lie directly in it"]),
        ("one_class", ["one class folder only (cat)"]),
        ("class_without_images", ["class folder", "dog has no images", ".png"]),
        ("corrupt", ["b.png could not be read as an image (no image format PIL knows)", "replace it or delete it"]),
        ("truncated", ["a.jpg could not be read as an image"]),
        ("test_mismatch", ["class folders of", "differ: test/ lacks dog; test/ has cow, which train/ lacks"]),
        ("test_without_train", ["has test/ but no train/"]),
    ],
)
def test_bad_image_folders_say_one_line_and_write_nothing(tmp_path, own_cache, case, needles):
    root = bad_folder(tmp_path, case)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DataError) as excinfo:
        load_image_folder(root)
    one_line(excinfo, *needles)
    assert sorted(tmp_path.rglob("*")) == before and not own_cache.exists()


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"channels": 2}, "data.channels=2 is invalid"),
        ({"channels": True}, "data.channels=True is invalid"),
        ({"image_size": 0}, "data.image_size=0 is invalid"),
        ({"image_size": [8]}, "data.image_size=[8] is invalid"),
        ({"image_size": "32"}, "data.image_size='32' is invalid"),
        ({"test_fraction": 1.0}, "data.test_fraction=1.0 is invalid"),
    ],
)
def test_bad_image_options(tmp_path, options, needle):
    with pytest.raises(ConfigError) as excinfo:
        load_image_folder(split_folder(tmp_path / "pets"), **options)
    one_line(excinfo, needle)


# --- CSV tables ---------------------------------------------------------------------------


def write_csv(path, text):
    path.write_text(text)
    return path


IRIS = """sepal, petal, species
1.0, 0.5, setosa
1.2, 0.4, setosa

3.0, 2.0, "virginica"
3.3, 2.1, virginica
2.0, 1.0, versicolor
2.1, 1.1, versicolor
1.1, 0.5, setosa
3.1, 2.2, virginica
2.2, 1.2, versicolor
"""


def test_csv_with_string_labels(tmp_path):
    data = load_csv(write_csv(tmp_path / "iris.csv", IRIS), "species", test_fraction=0.34)
    assert data.classes == ("setosa", "versicolor", "virginica")
    assert data.train_samples.dtype == torch.float32 and data.train_samples.shape == (6, 2)
    assert data.test_samples.shape == (3, 2) and sorted(data.test_y.tolist()) == [0, 1, 2]
    assert data.train_y.dtype == torch.int64
    assert (data.train_samples[:, 0] < 1.5).tolist() == (data.train_y == 0).tolist()  # labels stay with their rows
    assert data.mean == pytest.approx(data.train_samples.double().mean(0).tolist())
    assert data.std == pytest.approx(data.train_samples.double().std(0, correction=0).tolist())


def test_csv_integer_labels_sort_numerically_and_constant_features_keep_scale(tmp_path):
    rows = "".join(f"{i},7,{label}\n" for i, label in enumerate([10, 2, 1, 10, 2, 1, 10, 2, 1]))
    data = load_csv(write_csv(tmp_path / "t.csv", "f,const,label\n" + rows), "label")
    assert data.classes == ("1", "2", "10")
    assert data.std[1] == 1.0 and data.mean[1] == 7.0


def test_csv_semicolons_and_a_test_file_with_other_column_order(tmp_path):
    train = write_csv(tmp_path / "train.csv", "a;b;y\n1;10;no\n2;20;yes\n3;30;no\n4;40;yes\n")
    test = write_csv(tmp_path / "test.csv", "y;b;a\nyes;50;5\nno;60;6\n")
    data = load_csv(train, "y", test_path=test)
    assert data.train_samples.shape == (4, 2) and data.test_samples.tolist() == [[5.0, 50.0], [6.0, 60.0]]
    assert data.classes == ("no", "yes") and data.test_y.tolist() == [1, 0]


@pytest.mark.parametrize(
    "text, label, needles",
    [
        ("a,b,y\n1,2,u\n3,4,v\n", "class", ["no column 'class'", "columns: a, b, y", "data.label="]),
        ("a,b,y\n1,2,u\n3,4,u\n", "y", ["one class only (u)"]),
        ("a,b,y\n1,2,u\n3,red,v\n", "y", ["line 3, column 'b'", "'red' is not a number"]),
        ("a,b,y\n1,2,u\n\n3,,v\n", "y", ["line 4, column 'b' is empty"]),
        ("a,b,y\n1,nan,u\n3,4,v\n", "y", ["line 2, column 'b'", "'nan' is not a finite number"]),
        ("a,b,y\n1,2,u\n3,1e99,v\n", "y", ["line 3, column 'b'", "'1e99'"]),
        ("a,b,y\n1,2,u\n3,4\n", "y", ["line 3 has 2 fields, the header has 3"]),
        ("a,b,y\n1,2,u\n3,4, \n", "y", ["line 3 has no label in column 'y'"]),
        ("a,b,y\n", "y", ["header row but no data rows"]),
        ("", "y", ["is empty", "header row"]),
        ("y\nu\nv\n", "y", ["only the label column 'y'"]),
        ("a,a,y\n1,2,u\n3,4,v\n", "y", ["column name a more than once"]),
    ],
)
def test_bad_csv_says_one_line(tmp_path, text, label, needles):
    with pytest.raises(DataError) as excinfo:
        load_csv(write_csv(tmp_path / "t.csv", text), label)
    one_line(excinfo, "t.csv", *needles)


def test_bad_csv_files_and_test_files(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_csv(tmp_path / "nope.csv", "y")
    one_line(excinfo, "nope.csv does not exist")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError) as excinfo:
        load_csv(tmp_path / "bin.csv", "y")
    one_line(excinfo, "is not UTF-8 text")
    train = write_csv(tmp_path / "train.csv", "a,b,y\n1,2,u\n3,4,v\n")
    with pytest.raises(DataError) as excinfo:
        load_csv(train, "y", test_path=write_csv(tmp_path / "t1.csv", "a,b,y\n1,2,w\n"))
    one_line(excinfo, "t1.csv has labels the training data lacks: w", "training classes: u, v")
    with pytest.raises(DataError) as excinfo:
        load_csv(train, "y", test_path=write_csv(tmp_path / "t2.csv", "a,c,y\n1,2,u\n"))
    one_line(excinfo, "t2.csv has other feature columns", "missing b", "extra c")
    with pytest.raises(ConfigError) as excinfo:
        load_csv(train, "")
    one_line(excinfo, "data.label='' is invalid")


# --- .npz arrays --------------------------------------------------------------------------


def test_npz_without_test_arrays(tmp_path):
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([5, 7] * 10))
    data = load_arrays(tmp_path / "d.npz", test_fraction=0.2, seed=1)
    assert data.classes == ("5", "7")
    assert (
        data.train_samples.dtype == torch.float32
        and data.train_samples.shape == (16, 2)
        and data.test_samples.shape == (4, 2)
    )
    assert data.test_y.bincount().tolist() == [2, 2]
    assert torch.equal(data.train_samples[:, 0].long() // 2 % 2, data.train_y)  # rows keep their labels


def test_npz_with_test_arrays_and_string_labels(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x=np.eye(4, dtype=np.int32),
        y=np.array(["b", "a", "b", "a"]),
        x_test=np.ones((2, 4)),
        y_test=np.array(["a", "a"]),
    )
    data = load_arrays(tmp_path / "d.npz")
    assert data.classes == ("a", "b") and data.train_y.tolist() == [1, 0, 1, 0] and data.test_y.tolist() == [0, 0]
    assert data.test_samples.dtype == torch.float32 and data.test_samples.shape == (2, 4)
    assert data.mean == pytest.approx([0.25] * 4) and all(s > 0 for s in data.std)


def test_npz_whole_float_labels_are_class_ids(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(10, 3)), y=np.array([0.0, 1.0] * 5))
    assert load_arrays(tmp_path / "d.npz").classes == ("0", "1")


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({"y": np.zeros(4)}, ["no array x", "arrays: y"]),
        ({"x": np.zeros((4, 2))}, ["no array y"]),
        ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 0])}, ["x has 4 rows but y has 3 labels"]),
        ({"x": np.array([[1.0, np.nan], [1, 2]]), "y": np.array([0, 1])}, ["nan at row 0, feature 1"]),
        ({"x": np.array([[1.0, np.inf], [1, 2]]), "y": np.array([0, 1])}, ["inf at row 0, feature 1"]),
        ({"x": np.zeros((4, 2, 2)), "y": np.array([0, 1, 0, 1])}, ["shape (4, 2, 2)", "x.reshape(len(x), -1)"]),
        ({"x": np.zeros(4), "y": np.array([0, 1, 0, 1])}, ["shape (4,)", "x.reshape(-1, 1)"]),
        ({"x": np.array([["a"], ["b"]]), "y": np.array([0, 1])}, ["x in", "features must be numbers"]),
        ({"x": np.zeros((2, 1)), "y": np.array([0.5, 1.0])}, ["y in", "labels must be whole numbers or strings"]),
        ({"x": np.zeros((2, 1)), "y": np.array([[0], [1]])}, ["y in", "shape (2, 1)", "one label per row"]),
        ({"x": np.zeros((2, 1)), "y": np.array([3, 3])}, ["one class only (3)"]),
        ({"x": np.zeros((2, 1)), "y": np.array([0, 1]), "x_test": np.zeros((1, 1))}, ["has x_test but no y_test"]),
        (
            {"x": np.zeros((2, 1)), "y": np.array([0, 1]), "x_test": np.zeros((1, 3)), "y_test": np.array([0])},
            ["x_test in", "has 3 features, x has 1"],
        ),
        (
            {"x": np.zeros((2, 1)), "y": np.array([0, 1]), "x_test": np.zeros((1, 1)), "y_test": np.array([2])},
            ["labels the training data lacks: 2"],
        ),
    ],
)
def test_bad_npz_says_one_line(tmp_path, arrays, needles):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError) as excinfo:
        load_arrays(tmp_path / "d.npz")
    one_line(excinfo, "d.npz", *needles)


def test_bad_npz_files(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    np.save(tmp_path / "one.npy", np.zeros((2, 2)))
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    for name, needle in (
        ("obj.npz", "arrays of Python objects"),
        ("one.npy", "single array (.npy)"),
        ("text.npz", "is not a readable .npz file"),
        ("none.npz", "does not exist"),
    ):
        with pytest.raises(DataError) as excinfo:
            load_arrays(tmp_path / name)
        one_line(excinfo, name, needle)


# --- the shared test split ----------------------------------------------------------------


def test_split_is_stratified_disjoint_and_keeps_a_training_row_per_class():
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 1 + [3] * 2)
    train, test = split_test(y, 0.2, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(len(y)))
    assert y[test].bincount(minlength=4).tolist() == [10, 2, 0, 1]
    assert torch.equal(train, train.sort().values)
    assert not torch.equal(split_test(y, 0.2, seed=1)[1], test)


def test_errors_are_dlcli_errors():
    assert issubclass(DataError, DlcliError) and issubclass(ConfigError, DlcliError)
