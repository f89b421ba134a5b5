"""Hostile folders and files (issue 19): link loops, FIFOs, pixel bombs, pickles posing as arrays, missing
labels; and the first Ctrl-C or SIGTERM ending every command within 2 s, whatever it is doing."""

import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FAST_TOY, assert_one_line_error, dlcli_env, start_dlcli, wait_for
from dlcli.data import folders, scan
from dlcli.data.folders import load_image_folder
from dlcli.data.tables import load_csv
from dlcli.errors import DataError
from dlcli.inputs import read_inputs

LIMIT = 2.0  # seconds from the signal to the end of the process
TOY = [a for a in FAST_TOY if not a.startswith("model.")]


def image_folder(root: Path, per_class: int = 6, classes: str = "ab") -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def bomb_png(path: Path, width: int = 10000, height: int = 10000) -> Path:
    """A PNG of zeros declaring width×height gray pixels: about 100 KB on disk for 10000×10000."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)  # each row: filter byte, then the pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory, cache_dir) -> Path:
    """last.pt of an MLP trained for one epoch on a 12-image folder of 8×8 gray images."""
    where = tmp_path_factory.mktemp("images")
    image_folder(where / "imgs")
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dlcli.cli",
            "train",
            "data=image_folder",
            f"data.root={where / 'imgs'}",
            "model=mlp",
            "model.width=16",
            "trainer.epochs=1",
            "trainer.progress=false",
            "hydra.run.dir=run",
        ],
        cwd=where,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return where / "run" / "checkpoints" / "last.pt"


IMAGES = {"kind": "images", "shape": [1, 8, 8]}  # checkpoints' inputs records, as dlcli predict reads them
FEATURES = {"kind": "features", "shape": [2]}


def within(seconds: float, function, *args):
    """function(*args), which must return (or raise) within `seconds`: a scan that hangs fails the test."""
    outcome = {}

    def call() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} still running after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLCLI_CACHE", str(tmp_path / "cache"))


# --- scanning: each real file once, under one label; nothing but regular files ----------------


def test_a_link_back_up_in_a_class_folder_adds_no_sample_and_no_label(tmp_path, own_cache, foreign, caplog):
    root = image_folder(tmp_path / "imgs")
    (root / "a" / "up").symlink_to("..")  # once turned 12 images into 492 samples, b's labelled a too
    unchanged = foreign(root)
    loaded = load_image_folder(root)
    assert loaded.train_y.bincount().tolist() == [5, 5] and loaded.test_y.bincount().tolist() == [1, 1]
    train = {tuple(x.flatten().tolist()) for x in loaded.train_samples}
    assert not train & {tuple(x.flatten().tolist()) for x in loaded.test_samples}
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and "link back into the folder or above it" in skipped[0], skipped
    assert skipped[0].endswith("skipped 1 entry: " + scan.INSIDE + " (1): a/up"), skipped
    unchanged()


def test_two_links_back_up_in_a_class_folder_end_the_scan(tmp_path, own_cache, foreign, caplog):
    root = image_folder(tmp_path / "imgs")
    (root / "a" / "up").symlink_to("..")
    (root / "a" / "up2").symlink_to("..")  # once: a walk that never ended, without a word
    unchanged = foreign(root)
    loaded = within(20, load_image_folder, root)
    assert len(loaded.train_y) + len(loaded.test_y) == 12
    assert any("skipped 2 entries" in r.getMessage() and "a/up, a/up2" in r.getMessage() for r in caplog.records)
    unchanged()


def test_a_folder_outside_counts_once_and_under_one_label(tmp_path, own_cache, foreign, caplog):
    root = image_folder(tmp_path / "imgs")
    extra = image_folder(tmp_path / "extra", per_class=3, classes="c")
    (root / "a" / "more").symlink_to(extra / "c")  # outside the folder: followed
    (root / "b" / "same").symlink_to(extra / "c")  # the same images again, as b: not counted twice
    os.link(root / "a" / "0.png", root / "a" / "hard.png")  # one file under two names
    unchanged, unchanged_extra = foreign(root), foreign(extra)
    loaded = load_image_folder(root)
    labels = loaded.train_y.tolist() + loaded.test_y.tolist()
    assert labels.count(0) == 6 + 3 and labels.count(1) == 6
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "b/same" in message and "a/hard.png" in message, message
    unchanged()
    unchanged_extra()


def test_predict_skips_links_back_up_and_a_fifo_in_its_inputs(tmp_path, foreign, caplog):
    inputs = image_folder(tmp_path / "inputs", per_class=2)
    (inputs / "a" / "up").symlink_to("..")
    (inputs / "b" / "up").symlink_to("../..")  # above the folder: it would walk it again, and all around it
    (inputs / "b" / "root").symlink_to("/")
    os.mkfifo(inputs / "pipe.png")  # once: predict waiting forever for a writer
    unchanged = foreign(inputs)
    names, x = within(20, read_inputs, inputs, IMAGES)
    assert names == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"] and x.shape == (4, 1, 8, 8)
    line = next(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert "FIFO, not a regular file (1): pipe.png" in line, line
    assert "link back into the folder or above it" in line and "(3): a/up, b/root, b/up" in line, line
    unchanged()


@pytest.mark.parametrize("suffix, record", [(".png", IMAGES), (".npy", IMAGES), (".csv", FEATURES)])
def test_a_fifo_given_as_inputs_is_refused_without_being_opened(suffix, record, tmp_path):
    os.mkfifo(tmp_path / f"pipe{suffix}")
    with pytest.raises(DataError, match=f"inputs={tmp_path / 'pipe'}{suffix} is a FIFO, not a regular file"):
        within(20, read_inputs, tmp_path / f"pipe{suffix}", record)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["eval", "checkpoint={fifo}.pt"],
        ["train", "data=csv", "data.path={fifo}.csv", "data.label=y"],
    ],
    ids=["checkpoint", "data.path"],
)
def test_a_fifo_given_as_a_file_is_refused_without_being_opened(command, dlcli, tmp_path):
    fifo = tmp_path / "pipe"
    suffix = next(a.split("{fifo}")[1] for a in command if "{fifo}" in a)
    os.mkfifo(f"{fifo}{suffix}")
    proc = dlcli(*[a.format(fifo=fifo) for a in command], timeout=60, process=True)  # a hang fails, not waits
    assert_one_line_error(proc, f"{fifo}{suffix}", "is a FIFO, not a regular file")


# --- the pixel cap -----------------------------------------------------------------------


def test_a_pixel_bomb_is_refused_from_its_header_by_predict(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning would fail here
        expected = (
            r"bomb.png is 10000×10000 pixels \(100.0 megapixels\), more than max_pixels=67,108,864 "
            r"allows .*raise the cap with max_pixels=N"
        )
        with pytest.raises(DataError, match=expected) as caught:
            read_inputs(bomb, IMAGES)
    assert "\n" not in str(caught.value)


def test_above_pils_own_limit_the_cap_alone_decides_without_pils_warning(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")  # 100 megapixels: PIL warns from 89
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert folders._inspect(bomb, 10**8, "max_pixels") == ("L", (10000, 10000))
        with pytest.raises(DataError, match="more than max_pixels=99,999,999 allows"):
            folders._inspect(bomb, 10**8 - 1, "max_pixels")


def test_an_image_folder_refuses_an_image_above_data_max_pixels(tmp_path, own_cache):
    root = image_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"8×8 pixels .* more than data.max_pixels=63 allows"):
        load_image_folder(root, max_pixels=63)
    assert len(load_image_folder(root, max_pixels=64).train_y) == 10
    bomb_png(root / "b" / "huge.png")
    with pytest.raises(DataError, match=r"huge.png is 10000×10000 pixels .*data.max_pixels=N") as caught:
        load_image_folder(root)
    assert "\n" not in str(caught.value)


def test_the_pixel_caps_are_checked(dlcli, tmp_path):
    proc = dlcli("train", "data=image_folder", "data.root=.", "data.max_pixels=0")
    assert_one_line_error(proc, "data.max_pixels=0 is invalid", "an integer >= 1")
    proc = dlcli("predict", "checkpoint=c.pt", "inputs=.", "max_pixels=-1")
    assert_one_line_error(proc, "max_pixels=-1 is invalid", "an integer >= 1")


# --- pickles posing as arrays, missing labels ---------------------------------------------


def test_a_pickle_named_npy_is_one_line_without_numpys_advice(tmp_path, marker):
    ran = marker(tmp_path / "ran")
    with open(tmp_path / "x.npy", "wb") as f:
        pickle.dump(Payload(str(ran)), f)
    with pytest.raises(DataError, match="x.npy is a Python pickle .*np.save") as caught:
        read_inputs(tmp_path / "x.npy", IMAGES)
    assert "allow_pickle" not in str(caught.value) and "\n" not in str(caught.value)


class Payload:
    """Unpickled, it would create the marker file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("cell", ["nan", "NaN"])
def test_a_nan_label_in_a_csv_is_a_missing_label_not_a_class(cell, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(6)) + f"7,{cell}\n8,a\n")
    with pytest.raises(DataError, match=rf"line 8 has no label in column 'y' \(only '{cell}'") as caught:
        load_csv(path, "y")
    assert "\n" not in str(caught.value)


# --- the first signal ends every command within LIMIT seconds --------------------------------


def _started(args: list[str], cwd: Path, cache_dir: Path, **env: str) -> subprocess.Popen:
    return start_dlcli(args, cwd, dlcli_env(cache_dir, **env))


def _stop(proc: subprocess.Popen, signum: int = signal.SIGINT) -> str:
    """Send one signal; the process must end within LIMIT seconds, with 128 + signum and no traceback."""
    assert proc.poll() is None, "it finished before the signal: " + proc.stderr.read()[-2000:]
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=LIMIT + 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"still running {LIMIT + 10:g} s after {signal.Signals(signum).name}: {err[-2000:]}"
        ) from None
    took = time.monotonic() - sent
    assert took < LIMIT, f"ended {took:.2f} s after the signal"
    assert proc.returncode == 128 + signum, (proc.returncode, err)
    assert "Traceback" not in out + err, err
    return err


STUCK = """
import os, threading
from torch import nn

class Net(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(input_shape[0], num_classes)
        # a thread blocked reading a FIFO, which the interpreter would join at exit; the main thread too
        threading.Thread(target=lambda: open(os.environ["STUCK_FIFO"]).read()).start()
        print("blocked", flush=True)
        open(os.environ["STUCK_FIFO"]).read()
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_read_blocked_on_a_fifo_in_two_threads_ends_at_the_first_signal(signum, tmp_path, cache_dir):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "my_nets.py").write_text(STUCK)
    proc = _started(
        ["train", *TOY, "model=custom", "model._target_=my_nets.Net", "hydra.run.dir=run"],
        tmp_path,
        cache_dir,
        STUCK_FIFO=str(tmp_path / "fifo"),
    )
    wait_for(proc, "blocked")
    time.sleep(0.2)  # into open()
    err = _stop(proc, signum)
    assert err.strip().splitlines() == ["dlcli: interrupted" + (" (SIGTERM)" if signum == signal.SIGTERM else "")]


@pytest.mark.slow
def test_a_sweep_ends_at_the_first_sigint_without_starting_the_next_job(tmp_path, cache_dir):
    proc = _started(
        ["train", "-m", *FAST_TOY, "trainer.epochs=500", "optimizer.lr=0.1,0.01,0.001", "hydra.sweep.dir=sweep"],
        tmp_path,
        cache_dir,
    )
    wait_for(proc, "epoch 1/")
    err = _stop(proc)
    assert "SIGINT: stopped at epoch" in err
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, delay, signum",
    [
        ("eval", 0.3, signal.SIGINT),  # importing
        ("eval", 1.2, signal.SIGTERM),
        ("predict", 1.2, signal.SIGINT),
        ("export", 1.2, signal.SIGINT),
        ("report", 0.3, signal.SIGINT),  # it is done in about 0.7 s
    ],
)
def test_every_command_ends_at_the_first_signal_whatever_it_is_doing(
    command, delay, signum, image_checkpoint, tmp_path, cache_dir
):
    run = image_checkpoint.parent.parent
    args = {
        "eval": ["eval", f"checkpoint={image_checkpoint}", "hydra.run.dir=ev"],
        "predict": ["predict", f"checkpoint={image_checkpoint}", f"inputs={run.parent / 'imgs'}", "hydra.run.dir=p"],
        "export": ["export", f"checkpoint={image_checkpoint}", "format=torchscript", f"out={tmp_path / 'm.pt'}"],
        "report": ["report", str(run), "--out", str(tmp_path / "report")],
    }[command]
    proc = _started(args, tmp_path, cache_dir)
    time.sleep(delay)
    err = _stop(proc, signum)
    assert err.strip().splitlines() == ["dlcli: interrupted" + (" (SIGTERM)" if signum == signal.SIGTERM else "")]
