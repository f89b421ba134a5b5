"""data.storage: the same batches from the memory-mapped cache as from memory, memory that does not
grow with the data on the disk path, and a cache that is never taken for complete when it is not."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_resume import KILL_AFTER_THE_MID_EPOCH_CHECKPOINT

from conftest import assert_one_line_error, dlcli_env, read_jsonl, write_images
from dlcli.data import cache, folders, load_data, train_batches
from dlcli.data.bundle import eval_batches
from dlcli.data.folders import load_image_folder
from dlcli.errors import ConfigError, DataError
from dlcli.machine import peak_rss_anon
from dlcli.settings import CSVSettings, Custom, ImageDataSettings, ImageFolderSettings

CPU = torch.device("cpu")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def folder_settings(root: Path, **keys) -> ImageFolderSettings:
    return ImageFolderSettings(root=str(root), augment=True, flip=True, **keys)


# --- in-process: the two paths' batches, the choice, the cache files ---------------------------------


def test_disk_batches_are_the_memory_batches_in_the_same_order(tmp_path, own_cache):
    root = write_images(tmp_path / "img", 40)
    memory = load_data(folder_settings(root, storage="memory"), 0, 0.2, CPU)
    disk = load_data(folder_settings(root, storage="disk"), 0, 0.2, CPU)
    assert (memory.storage, disk.storage) == ("memory", "disk")
    assert disk.train.rows is not None and disk.train.x.shape[0] == 80  # the whole store, not a copy of the split
    for shard in ((0, 1), (0, 2), (1, 2)):  # and each process's share of each batch, as with two processes
        one = list(train_batches(memory, 16, torch.Generator().manual_seed(5), shard=shard))
        two = list(train_batches(disk, 16, torch.Generator().manual_seed(5), shard=shard))
        assert len(one) == len(two) >= 3
        for (x1, y1, n1), (x2, y2, n2) in zip(one, two):
            assert torch.equal(x1, x2) and torch.equal(y1, y2) and n1 == n2
    # a run resumed at batch 2 of the epoch gets the batch an uninterrupted one would
    resumed = list(train_batches(disk, 16, torch.Generator().manual_seed(5), start=2))
    whole = list(train_batches(memory, 16, torch.Generator().manual_seed(5)))
    assert torch.equal(resumed[0][0], whole[2][0])
    for split in ("val", "test"):
        pairs = zip(eval_batches(memory, split, 7), eval_batches(disk, split, 7))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    assert torch.equal(memory.train.head(5), disk.train.head(5))


def test_a_loader_of_your_own_can_hand_the_disk_path_a_memory_map(tmp_path, monkeypatch):
    """README, Data bigger than memory: a data=custom loader returning a mapped .npy, +data.storage=disk."""
    images = np.random.default_rng(0).integers(0, 255, (40, 1, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "mapped.npy", images)
    (tmp_path / "my_mapped_loader.py").write_text(
        "import numpy, torch\n"
        "from dlcli.data import Loaded\n"
        "def load():\n"
        "    x = torch.from_numpy(numpy.load('mapped.npy', mmap_mode='c'))\n"
        "    y = torch.arange(40) % 2\n"
        "    return Loaded(x[:30], y[:30], x[30:], y[30:], ('a', 'b'), [0.5], [0.25])\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    disk = load_data(Custom("my_mapped_loader.load", {"storage": "disk"}), 0, 0.2, CPU)
    memory = load_data(Custom("my_mapped_loader.load", {"storage": "memory"}), 0, 0.2, CPU)
    assert (disk.storage, memory.storage) == ("disk", "memory")
    one, two = (next(train_batches(d, 8, torch.Generator().manual_seed(1))) for d in (disk, memory))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    with pytest.raises(ConfigError, match="data.storage='ssd' is invalid"):
        load_data(Custom("my_mapped_loader.load", {"storage": "ssd"}), 0, 0.2, CPU)


def test_a_table_on_disk_gives_the_rows_it_gives_in_memory(tmp_path, own_cache):
    rng = np.random.default_rng(0)
    rows = "\n".join(",".join(f"{v:.4f}" for v in rng.normal(size=4)) + f",{i % 3}" for i in range(300))
    (tmp_path / "t.csv").write_text("a,b,c,d,y\n" + rows + "\n")
    memory, disk = (
        load_data(CSVSettings(path=str(tmp_path / "t.csv"), label="y", storage=s), 0, 0.2, CPU)
        for s in ("memory", "disk")
    )
    assert (memory.storage, disk.storage) == ("memory", "disk") and disk.train.x.dtype == torch.float32
    one, two = (list(train_batches(d, 32, torch.Generator().manual_seed(2))) for d in (memory, disk))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(one, two)) and len(one) == len(two)
    pairs = zip(eval_batches(memory, "test", 25), eval_batches(disk, "test", 25))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    (stored,) = [p for p in own_cache.glob("table-t-*.npy") if not p.name.endswith(".labels.npy")]
    assert np.load(stored).dtype == np.float32 and np.load(stored).shape == (300, 4)
    again = load_data(CSVSettings(path=str(tmp_path / "t.csv"), label="y", storage="disk"), 0, 0.2, CPU)
    assert torch.equal(next(eval_batches(again, "test", 25))[0], next(eval_batches(disk, "test", 25))[0])


def test_auto_keeps_mnist_in_memory_and_a_set_over_its_rule_on_disk(mnist_root, caplog):
    spec = ImageDataSettings(root=str(mnist_root), download=False, subset=1000)
    with caplog.at_level(logging.INFO, logger="dlcli"):
        assert load_data(spec, 0, 0.1, CPU).storage == "memory"
        small = ImageDataSettings(root=str(mnist_root), download=False, subset=1000, memory_fraction=1e-6)
        assert load_data(small, 0, 0.1, CPU).storage == "disk"
    lines = [r.getMessage() for r in caplog.records if "data.storage=auto" in r.getMessage()]
    assert lines[0].startswith("data.storage=auto: memory, as the images take 8 MiB, within data.memory_fraction=0.5")
    assert lines[1].startswith(
        "data.storage=auto: disk, as the images take 8 MiB, more than data.memory_fraction=1e-06"
    )


def test_the_cache_is_npy_files_numpy_reads(tmp_path, own_cache):
    root = write_images(tmp_path / "img", 5)
    loaded = load_image_folder(root)
    (images,) = [p for p in own_cache.glob("folder-img-*.npy") if not p.name.endswith(".labels.npy")]
    (labels,) = own_cache.glob("folder-img-*.labels.npy")
    x = np.load(images)
    assert x.shape == (10, 3, 16, 16) and x.dtype == np.uint8 and np.load(labels).tolist() == [0] * 5 + [1] * 5
    assert np.array_equal(x, loaded.train_x.numpy())
    record = json.loads(images.with_name(images.name.replace(".npy", ".json")).read_text())
    assert record["shape"] == [10, 3, 16, 16] and record["images"] == [images.stat().st_size, images.stat().st_mtime_ns]


def test_several_decoding_processes_write_the_same_cache_as_one(tmp_path, monkeypatch):
    root = write_images(tmp_path / "img", 150, size=8)  # 300 images: 5 chunks
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "one"))
    one = load_image_folder(root, workers=1)
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "two"))
    two = load_image_folder(root, workers=2)
    assert torch.equal(one.train_x, two.train_x) and torch.equal(one.train_rows, two.train_rows)
    assert one.mean == two.mean and one.std == two.std


def test_a_truncated_or_altered_cache_is_rebuilt(tmp_path, own_cache, monkeypatch):
    root = write_images(tmp_path / "img", 5)
    first = load_image_folder(root).train_samples.clone()
    (images,) = [p for p in own_cache.glob("folder-img-*.npy") if not p.name.endswith(".labels.npy")]
    decoded = []
    decode = folders._decode_file
    monkeypatch.setattr(folders, "_decode_file", lambda *a: decoded.append(1) or decode(*a))
    with open(images, "r+b") as f:
        f.truncate(images.stat().st_size - 100)
    assert torch.equal(load_image_folder(root).train_samples, first) and len(decoded) == 10
    with open(images, "r+b") as f:  # the same size, other bytes
        f.seek(-10, os.SEEK_END)
        f.write(b"\xff" * 10)
    assert torch.equal(load_image_folder(root).train_samples, first) and len(decoded) == 20
    assert torch.equal(load_image_folder(root).train_samples, first) and len(decoded) == 20  # now current


def test_a_full_disk_is_one_line_and_leaves_no_cache(tmp_path, own_cache, monkeypatch):
    root = write_images(tmp_path / "img", 5)

    def no_room(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "posix_fallocate", no_room)
    with pytest.raises(DataError) as info:
        load_image_folder(root)
    message = str(info.value)
    assert message.startswith("no room for the image cache folder-img-") and "DLCLI_CACHE=DIR" in message
    assert "\n" not in message and not own_cache.exists()  # the folder it made goes with the lock


def test_images_changing_while_they_are_decoded_is_one_line_and_no_cache(tmp_path, own_cache, monkeypatch):
    root = write_images(tmp_path / "img", 5)
    decode = folders._decode_file
    victim = root / "b" / "4-0.ppm"

    def decode_and_touch(path, *args):
        os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10**9))
        return decode(path, *args)

    monkeypatch.setattr(folders, "_decode_file", decode_and_touch)
    with pytest.raises(DataError, match=f"{victim} changed while the images of {root} were being decoded"):
        load_image_folder(root)
    assert not own_cache.exists()
    monkeypatch.setattr(folders, "_decode_file", decode)
    assert len(load_image_folder(root).train_samples) == 8


def test_a_damaged_image_in_a_decoding_process_is_one_line_naming_it(tmp_path, own_cache):
    root = write_images(tmp_path / "img", 100, size=8)
    (root / "b" / "50-0.ppm").write_bytes(b"P6\n8 8\n255\nshort")
    with pytest.raises(DataError, match=r"50-0.ppm could not be read as an image") as info:
        load_image_folder(root, workers=2)
    assert "\n" not in str(info.value) and not own_cache.exists()


def test_a_decoding_process_that_dies_is_one_line_not_a_hang(tmp_path, own_cache, monkeypatch):
    root = write_images(tmp_path / "img", 100, size=8)
    decode = folders._decode_file

    def killed_on(path, *args):  # as the kernel's OOM killer would end it
        if path.name == "50-0.ppm":
            os.kill(os.getpid(), signal.SIGKILL)
        return decode(path, *args)

    monkeypatch.setattr(folders, "_decode_file", killed_on)
    with pytest.raises(DataError, match=r"a process decoding the images of .* died before it was done") as info:
        load_image_folder(root, workers=2)
    assert "data.workers=1" in str(info.value) and not own_cache.exists()


def test_bad_storage_keys_are_one_line(dlcli, tmp_path):
    root = write_images(tmp_path / "img", 3)
    for override, needle in (
        ("data.storage=ssd", "data.storage='ssd' is invalid: choose one of auto, memory, disk"),
        ("data.memory_fraction=0", "data.memory_fraction=0 is invalid: a fraction in (0, 1]"),
        ("data.workers=-1", "data.workers=-1 is invalid: an integer in [0, 1024]"),
    ):
        assert_one_line_error(dlcli("train", "data=image_folder", f"data.root={root}", override), needle)


# --- end to end: whole runs -------------------------------------------------------------------------

RUN = ["data=image_folder", "model.width=16", "trainer.epochs=2", "trainer.batch_size=64", "trainer.progress=false"]


def train(
    tmp_path: Path, cache_dir: Path, *args: str, script: str | None = None, env: dict | None = None
) -> subprocess.Popen:
    command = [sys.executable, "-c", script, "train"] if script else [sys.executable, "-m", "dlcli.cli", "train"]
    return subprocess.Popen(
        [*command, *RUN, *args],
        cwd=tmp_path,
        env=dlcli_env(cache_dir, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def metrics(run: Path) -> list[dict]:
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
    return [{k: row[k] for k in keep} for row in read_jsonl(run / "metrics.jsonl")]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("storage") / "img", 600)


@pytest.mark.slow
def test_disk_and_memory_runs_are_bit_equal_and_a_killed_run_resumes_exactly(images, tmp_path):
    root = f"data.root={images}"
    for storage in ("memory", "disk"):
        finished(train(tmp_path, tmp_path / "cache", root, f"data.storage={storage}", f"hydra.run.dir={storage}"))
    assert metrics(tmp_path / "disk") == metrics(tmp_path / "memory")
    summaries = [json.loads((tmp_path / s / "summary.json").read_text()) for s in ("memory", "disk")]
    assert summaries[0]["test_acc"] == summaries[1]["test_acc"] and summaries[0]["test_acc"] > 0.9
    killed = train(
        tmp_path,
        tmp_path / "cache",
        root,
        "data.storage=disk",
        "hydra.run.dir=killed",
        "trainer.checkpoint_every_steps=10",
        script=KILL_AFTER_THE_MID_EPOCH_CHECKPOINT,
    )
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    finished(
        train(tmp_path, tmp_path / "cache", root, "data.storage=disk", "hydra.run.dir=killed", "trainer.resume=auto")
    )
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "disk")


KILL_HALFWAY_THROUGH_THE_CACHE = """
import os, signal, sys
from dlcli.data import folders
decode = folders.decode_into
def half_then_die(path, files, *args):
    decode(path, files[: len(files) // 2], *args)
    os.kill(os.getpid(), signal.SIGKILL)
folders.decode_into = half_then_die
from dlcli.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_cache_build_killed_halfway_is_rebuilt_whole(images, tmp_path):
    root = f"data.root={images}"
    finished(train(tmp_path, tmp_path / "clean", root, "data.storage=disk", "hydra.run.dir=clean"))
    killed = train(tmp_path, tmp_path / "cache", root, "hydra.run.dir=a", script=KILL_HALFWAY_THROUGH_THE_CACHE)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert list((tmp_path / "cache").glob("*.partial")) and not list((tmp_path / "cache").glob("*.json"))
    finished(train(tmp_path, tmp_path / "cache", root, "data.storage=disk", "hydra.run.dir=b"))
    assert metrics(tmp_path / "b") == metrics(tmp_path / "clean")
    assert not list((tmp_path / "cache").glob("*.partial"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from Linux's /proc")
def test_on_disk_a_process_s_memory_does_not_grow_with_the_data(tmp_path):
    """The same 2,000 images of 128×128×3 (94 MiB), then four times over (375 MiB): on the disk path the
    run's peak anonymous memory grows by less than a tenth of the data; on the memory path by most of it."""
    small = write_images(tmp_path / "small", 1000, size=128)
    large = write_images(tmp_path / "large", 1000, size=128, copies=4)
    data_bytes = 4 * 2000 * 3 * 128 * 128
    peaks = {}
    for name, root, storage in (("1x", small, "disk"), ("4x", large, "disk"), ("4x memory", large, "memory")):
        proc = train(
            tmp_path,
            tmp_path / "cache",
            f"data.root={root}",
            f"data.storage={storage}",
            f"hydra.run.dir={name.replace(' ', '-')}",
            "trainer.epochs=1",
            # small enough that every split of the small set fills the batches gathered ahead, as the large one's do
            "trainer.eval_batch_size=32",
            # glibc keeps freed batches in per-thread arenas and moves its mmap threshold as it goes:
            # pinned, RssAnon is what the process holds, not what the allocator kept back for reuse
            env={"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "65536"},
        )
        outcome = {}
        watcher = threading.Thread(target=lambda p=proc, o=outcome: o.update(peak=peak_rss_anon(p)))
        watcher.start()
        finished(proc)
        watcher.join()
        peaks[name] = outcome["peak"]
    growth = peaks["4x"] - peaks["1x"]
    print(
        f"peak RssAnon MiB: { ({k: round(v / 2**20, 1) for k, v in peaks.items()}) }; data {data_bytes / 2**20:.0f} MiB"
    )
    assert growth < 0.1 * data_bytes, peaks
    assert peaks["4x memory"] - peaks["4x"] > 0.5 * data_bytes, peaks  # what is measured does see the data


def test_mixup_and_cutmix_mix_a_batch_into_soft_labels(tmp_path, dlcli):
    from dlcli.data import mixing

    assert mixing(ImageFolderSettings(root="x"), 3) is None
    assert mixing(Custom("my.load", {"mixup": 0.2}), 3) is not None  # +data.mixup on data=custom
    both = mixing(ImageFolderSettings(root="x", mixup=0.2, cutmix=1.0), 3)
    torch.manual_seed(0)
    x, y = both(torch.rand(16, 3, 8, 8), torch.arange(16) % 3)
    assert x.shape == (16, 3, 8, 8) and y.shape == (16, 3) and torch.allclose(y.sum(1), torch.ones(16))
    root = write_images(tmp_path / "img", 30, size=8)
    run = ["data=image_folder", f"data.root={root}", "trainer.epochs=1", "trainer.progress=false"]
    proc = dlcli("train", *run, "data.mixup=0.4", "data.cutmix=1.0", "hydra.run.dir=mixed")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "mixed" / "summary.json").read_text())["status"] == "ok"
    assert_one_line_error(dlcli("train", *run, "data.mixup=0.4", "loss=hinge"), "which loss=hinge does not take")


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_each_policy_draws_for_each_image_on_its_own(policy):
    from dlcli.data.bundle import augmentation

    assert augmentation(ImageFolderSettings(root="x")) is None
    assert augmentation(Custom("my.load", {"policy": policy})) is not None  # +data.policy on data=custom
    torch.manual_seed(0)
    same = torch.randint(0, 256, (1, 3, 12, 12), dtype=torch.uint8).expand(32, -1, -1, -1)
    out = augmentation(ImageFolderSettings(root="x", policy=policy))(same)
    assert out.shape == same.shape and out.dtype == torch.uint8
    assert len({bytes(image.flatten().tolist()) for image in out}) > 8  # one draw per batch would give one image
    erased = augmentation(ImageFolderSettings(root="x", erasing=1.0))(same.clone() | 1)
    assert all((image == 0).any() for image in erased)  # every image has its rectangle of zeros


@pytest.mark.slow
def test_a_policy_and_erasing_train_from_the_cli(tmp_path, dlcli):
    root = write_images(tmp_path / "img", 30, size=8)
    run = ["data=image_folder", f"data.root={root}", "trainer.epochs=1", "trainer.progress=false"]
    proc = dlcli("train", *run, "data.policy=trivialaugment", "data.erasing=0.25", "hydra.run.dir=aug")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "aug" / "summary.json").read_text())["status"] == "ok"
    assert_one_line_error(
        dlcli("train", *run, "data.policy=augmix"), "data.policy='augmix' is invalid: choose one of none, randaugment"
    )
