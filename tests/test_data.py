"""Data: toy sets, the validation split, the image cache, CIFAR-10's real file format, augmentation."""

import pickle

import numpy as np
import pytest
import torch

from dlcli.data import batches_per_epoch, crop_and_flip, load_data, train_batches
from dlcli.data.builtin import load_images
from dlcli.data.toy import make_toy
from dlcli.errors import DataError
from dlcli.settings import CIFAR10Settings, ToyDataSettings

CPU = torch.device("cpu")


@pytest.mark.parametrize("name,classes", [("spirals", 3), ("spirals", 5), ("moons", 2), ("circles", 2), ("xor", 2)])
def test_toy_sets_are_balanced_2d_and_reproducible(name, classes):
    x, y = make_toy(name, 1000, 0.1, classes, torch.Generator().manual_seed(1))
    again, _ = make_toy(name, 1000, 0.1, classes, torch.Generator().manual_seed(1))
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and torch.equal(x, again)
    counts = torch.bincount(y, minlength=classes)
    assert len(counts) == classes and counts.min() >= 1000 // classes - 60


def test_validation_split_is_carved_from_train_and_fixed_by_the_seed():
    settings = ToyDataSettings(name="moons", n_samples=1000)
    a = load_data(settings, seed=3, val_fraction=0.2, device=CPU)
    b = load_data(settings, seed=3, val_fraction=0.2, device=CPU)
    c = load_data(settings, seed=4, val_fraction=0.2, device=CPU)
    assert len(a.train) == 800 and len(a.val) == 200 and len(a.test) == 250
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    rows = {tuple(r) for r in a.train.x.tolist()}
    assert not any(tuple(r) in rows for r in a.val.x.tolist())


def test_train_batches_cover_the_epoch_once_in_seeded_order():
    data = load_data(ToyDataSettings(name="xor", n_samples=1000), seed=0, val_fraction=0.1, device=CPU)
    seen = torch.cat([y for _, y, _ in train_batches(data, 64, torch.Generator().manual_seed(5))])
    again = torch.cat([y for _, y, _ in train_batches(data, 64, torch.Generator().manual_seed(5))])
    assert len(seen) == 900 == 14 * 64 + 4 and torch.equal(seen, again)
    assert batches_per_epoch(129, 64) == 2 and batches_per_epoch(130, 64) == 3


def write_cifar(root, n_train=20, n_test=10):
    """A tiny CIFAR-10 set in the real python-pickle layout: dicts of bytes keys, uint8 rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": ["x.png"] * n,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)  # the originals are Python 2 pickles
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane"] * 10, "num_cases_per_batch": n_train, "num_vis": 3072}, f, protocol=2)
    return folder


def test_cifar10_real_format_loads_through_torchvision_and_is_cached(tmp_path, monkeypatch):
    import torchvision

    folder = write_cifar(tmp_path)
    # these files are not the real ones, so torchvision's md5 check must be told they are
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    x, y = load_images("cifar10", str(tmp_path), train=True, download=False)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (100,)
    with open(folder / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="latin1")
    # row = 1024 red, 1024 green, 1024 blue values, row-major 32x32
    assert torch.equal(x[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert y[:20].tolist() == first["labels"]
    assert (tmp_path / "dlcli-cache" / "cifar10-train.npy").is_file()
    # the second load reads the cache without torchvision's check
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: False)
    x2, _ = load_images("cifar10", str(tmp_path), train=True, download=False)
    assert torch.equal(x, x2)


def test_cache_is_rebuilt_when_a_source_file_changes(tmp_path, monkeypatch):
    import torchvision

    folder = write_cifar(tmp_path)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    before, _ = load_images("cifar10", str(tmp_path), train=False, download=False)
    with open(folder / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    batch["data"] = 255 - batch["data"]
    batch["filenames"].append("y.png")  # a different size, so the fingerprint changes for sure
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    after, _ = load_images("cifar10", str(tmp_path), train=False, download=False)
    assert torch.equal(after, 255 - before)


def test_missing_files_without_download_say_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        load_images("mnist", str(tmp_path), train=True, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "data.root" in message and "\n" not in message


def test_an_unreachable_download_fails_at_once_in_one_line_and_creates_nothing(tmp_path, monkeypatch):
    import dataclasses

    from dlcli.data import builtin as images

    # .invalid never resolves (RFC 2606): what a machine without internet sees for every host
    monkeypatch.setitem(
        images.IMAGE_SETS, "mnist", dataclasses.replace(images.IMAGE_SETS["mnist"], hosts=("mirror.invalid",))
    )
    root = tmp_path / "elsewhere"
    with pytest.raises(DataError) as info:
        load_images("mnist", str(root), train=True, download=True)
    message = str(info.value)
    assert "cannot be downloaded: mirror.invalid:" in message and "no internet here?" in message
    assert message.endswith("at a folder that has them")  # the whole message, not cut mid-word
    assert not root.exists() and list(tmp_path.iterdir()) == []


def test_cifar_normalization_and_augmentation_shapes(tmp_path, monkeypatch):
    import torchvision

    write_cifar(tmp_path)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    settings = CIFAR10Settings(root=str(tmp_path), download=False, mean=[0.5] * 3, std=[0.25] * 3, augment=True)
    data = load_data(settings, seed=0, val_fraction=0.1, device=CPU)
    x, y, _ = next(train_batches(data, 16, torch.Generator().manual_seed(0)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    plain = data.inputs(data.val.x[:1])
    assert torch.allclose(plain, (data.val.x[:1].float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_crop_and_flip_shifts_and_mirrors_each_image():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4) + 1
    centred = torch.tensor([[1, 1], [1, 1]])
    out = crop_and_flip(x, centred, torch.tensor([False, True]), pad=1)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    # shift (0, 2) with pad 1: one row of border on top, the image moved one column left
    moved = crop_and_flip(x, torch.tensor([[0, 2], [1, 1]]), torch.tensor([False, False]), pad=1)
    assert moved[0, 0, 0].tolist() == [0, 0, 0, 0]
    assert moved[0, 0, 1].tolist() == x[0, 0, 0, 1:].tolist() + [0]
    assert torch.equal(moved[1], x[1])


def copy_mnist_train(root, dest):
    import shutil

    (dest / "MNIST" / "raw").mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):  # torchvision wants all four before it reads any
        shutil.copy(root / "MNIST" / "raw" / name, dest / "MNIST" / "raw" / name)
    return dest / "MNIST" / "raw"


def test_a_truncated_dataset_file_is_refused_in_one_line(mnist_root, tmp_path):
    raw = copy_mnist_train(mnist_root, tmp_path)
    with open(raw / "train-labels-idx1-ubyte", "r+b") as f:
        f.truncate(30_000)
    with pytest.raises(DataError) as info:
        load_images("mnist", str(tmp_path), train=True, download=False)
    message = str(info.value)
    assert "train-labels-idx1-ubyte has 30,000 bytes, expected 60,008" in message and "\n" not in message


def test_a_corrupted_dataset_file_fails_its_checksum_and_is_never_cached(mnist_root, tmp_path):
    raw = copy_mnist_train(mnist_root, tmp_path)
    with open(raw / "train-images-idx3-ubyte", "r+b") as f:
        f.seek(1000)
        f.write(b"\xff")
    with pytest.raises(DataError, match="fails its checksum"):
        load_images("mnist", str(tmp_path), train=True, download=False)
    assert not (tmp_path / "dlcli-cache" / "mnist-train.npy").exists()


def test_a_balanced_sampler_draws_classes_evenly_and_the_same_draws_on_resume():
    from dlcli.data import DataBundle, Split

    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    split = Split(torch.arange(1000, dtype=torch.float32)[:, None], y)
    data = DataBundle(
        split, split, split, (1,), ("a", "b", "c"), torch.zeros(()), torch.zeros(()), False, sampler="balanced"
    )
    epoch = list(train_batches(data, 100, torch.Generator().manual_seed(3)))
    drawn = torch.cat([labels for _, labels, _ in epoch])
    assert len(drawn) == 1000 and all(abs(c - 333) < 60 for c in torch.bincount(drawn).tolist())
    rare = torch.cat([x[labels == 2, 0] for x, labels, _ in epoch])
    assert set(rare.long().tolist()) <= set(range(990, 1000))  # drawn again and again, from class c's own samples
    resumed = list(train_batches(data, 100, torch.Generator().manual_seed(3), start=4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, epoch[4:])) and len(resumed) == 6
    plain = DataBundle(split, split, split, (1,), ("a", "b", "c"), torch.zeros(()), torch.zeros(()), False)
    seen = torch.cat([x[:, 0] for x, _, _ in train_batches(plain, 100, torch.Generator().manual_seed(3))])
    assert sorted(seen.long().tolist()) == list(range(1000))  # shuffle: each sample once


def test_the_balanced_sampler_from_the_command_line(dlcli, tmp_path):
    from conftest import assert_one_line_error

    rows = [f"{i % 7 / 7:.3f},{(i * 3) % 5 / 5:.3f},{0 if i % 10 else 1}" for i in range(400)]
    (tmp_path / "t.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    args = ["data=csv", f"data.path={tmp_path / 't.csv'}", "data.label=y", "trainer.epochs=1", "trainer.progress=false"]
    proc = dlcli("train", *args, "data.sampler=balanced", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(dlcli("train", *args, "data.sampler=oversample"), "data.sampler='oversample' is invalid")
