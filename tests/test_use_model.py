"""Using a trained model: `dlcli predict` on new inputs, `dlcli export` to ONNX and TorchScript, and what
`dlcli eval` shows of where it fails."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

N_PNG = 40


def mnist_test_images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split read straight from its idx files (not through dlcli): uint8 [N, 28, 28], labels."""
    raw = root / "MNIST" / "raw"
    images = np.fromfile(raw / "t10k-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.fromfile(raw / "t10k-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    return images, labels


@pytest.fixture(scope="module")
def lenet(lenet_run):
    """conftest's LeNet-5: (the folder it ran in, best.pt, its summary)."""
    return lenet_run.parent, lenet_run / "checkpoints" / "best.pt", json.loads((lenet_run / "summary.json").read_text())


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory, mnist_root) -> tuple[Path, dict[str, int]]:
    """The first MNIST test images as PNG files, named by index, with their labels."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    images, labels = mnist_test_images(mnist_root)
    truth = {}
    for i in range(N_PNG):
        path = folder / f"digit_{i:03d}.png"
        Image.fromarray(images[i]).save(path)
        truth[str(path)] = int(labels[i])
    return folder, truth


@pytest.mark.slow
def test_predict_a_folder_of_pngs(lenet, digit_pngs, dlcli, tmp_path):
    _, best, summary = lenet
    folder, truth = digit_pngs
    proc = dlcli("predict", f"checkpoint={best}", f"inputs={folder}", "hydra.run.dir=pred")
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "pred" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input", "class", "probability", "class_2", "probability_2", "class_3", "probability_3"]
    assert sorted(str(folder / r["input"]) for r in rows) == sorted(truth)  # named within the folder given
    right = sum(int(r["class"]) == truth[str(folder / r["input"])] for r in rows)
    # measured: 97.4% test accuracy after these two short epochs
    assert right >= 0.95 * N_PNG and summary["test_acc"] >= 0.96, (right, summary["test_acc"])
    for r in rows:
        p = [float(r["probability"]), float(r["probability_2"]), float(r["probability_3"])]
        assert p == sorted(p, reverse=True) and 0 < sum(p) <= 1 + 1e-5
    assert "digit_000.png" in proc.stdout and "top 3" in proc.stdout


def test_predict_reads_npy_as_uint8_or_unit_floats_alike(lenet, mnist_root, tmp_path):
    """In-process (the command's path is the PNG test's): the same images as uint8 N×H×W and float N×C×H×W."""
    from dlcli.inputs import read_inputs, restore

    _, best, _ = lenet
    images, labels = mnist_test_images(mnist_root)
    np.save(tmp_path / "u8.npy", images[:10])  # N×H×W uint8: the channel axis is added
    np.save(tmp_path / "f32.npy", (images[:10, None] / 255).astype(np.float32))
    restored = restore(best, [])
    (names, u8), (_, f32) = (read_inputs(tmp_path / f"{name}.npy", restored.record) for name in ("u8", "f32"))
    assert names == [f"u8.npy[{i}]" for i in range(10)]
    assert u8.shape == (10, 1, 28, 28) and torch.allclose(u8, f32)
    with torch.inference_mode():
        predicted = restored.model(u8).argmax(1).numpy()
    assert (predicted == labels[:10]).sum() >= 9


@pytest.mark.slow
def test_predict_bad_inputs_are_one_line(lenet, toy_checkpoint, dlcli, tmp_path):
    """The two the issue names as subprocesses (one line, exit 2, no folder); the others' messages in-process."""
    from dlcli.errors import DlcliError
    from dlcli.inputs import read_inputs, restore

    _, best, _ = lenet
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "rows.csv").write_text("x,y,z\n1,2,3\n")
    for checkpoint, inputs, message in [
        (best, "broken.png", "could not be read as an image"),
        (toy_checkpoint, "rows.csv", "has 3 features per row; this model takes 2"),
    ]:
        proc = dlcli("predict", f"checkpoint={checkpoint}", f"inputs={inputs}")
        assert proc.returncode == 2 and message in proc.stderr, (inputs, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "outputs").exists()  # a failed prediction leaves no folder behind

    np.save(tmp_path / "wrong.npy", np.zeros((2, 5, 5), dtype=np.uint8))
    (tmp_path / "named.csv").write_text("a,b\n1,2\n")
    images, points = restore(best, []).record, restore(toy_checkpoint, []).record
    for record, inputs, message in [
        (images, "wrong.npy", "this model takes images of shape N×1×28×28"),
        (images, "rows.csv", "holds features, but this model takes images"),
        (points, "broken.png", "holds images, but this model takes feature rows"),
        (points, ".", "holds images, but this model takes feature rows"),
        ({**points, "features": ["u", "v"]}, "named.csv", "lacks the feature columns u, v"),
    ]:
        with pytest.raises(DlcliError, match=message):
            read_inputs(tmp_path / inputs, record)


@pytest.mark.slow
def test_onnx_export_gives_the_checkpoints_test_accuracy(lenet, mnist_root, dlcli):
    import onnxruntime

    where, best, summary = lenet
    proc = dlcli("export", f"checkpoint={best}", "format=onnx", cwd=where)
    assert proc.returncode == 0, proc.stderr
    assert "largest difference from the checkpoint's outputs" in proc.stdout
    session = onnxruntime.InferenceSession(str(best.with_suffix(".onnx")), providers=["CPUExecutionProvider"])
    images, labels = mnist_test_images(mnist_root)
    x = (images[:, None] / 255).astype(np.float32)  # pixels in [0, 1]: the normalization is inside the file
    predicted = np.concatenate(
        [session.run(None, {"input": x[i : i + 2000]})[0].argmax(1) for i in range(0, len(x), 2000)]
    )
    accuracy = float((predicted == labels).mean())
    assert abs(accuracy - summary["test_acc"]) <= 2e-4, (accuracy, summary["test_acc"])  # a tie may flip, no more


@pytest.mark.slow
def test_torchscript_export_loads_with_torch_jit_and_gives_the_same_outputs(lenet, mnist_root, dlcli):
    import warnings

    from dlcli.inputs import restore

    where, best, _ = lenet
    out = where / "lenet.torchscript"
    proc = dlcli("export", f"checkpoint={best}", "format=torchscript", f"out={out}", cwd=where)
    assert proc.returncode == 0, proc.stderr
    images, _ = mnist_test_images(mnist_root)
    x = torch.from_numpy(images[:64, None] / 255).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks torch.jit deprecated
        loaded = torch.jit.load(str(out))
    with torch.inference_mode():
        assert torch.allclose(loaded(x), restore(best, []).model(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name, formats", [("resnet", ("onnx", "torchscript")), ("lstm", ("torchscript",))])
def test_batch_norm_and_recurrent_models_export_for_any_batch_size(tmp_path, name, formats):
    """Exported with a batch of 8 and run on one of 5: BatchNorm in eval mode, and a loop over time steps.
    (A recurrent model's ONNX export works too, but unrolls every step: 8 s for an LSTM over 28 rows.)"""
    from dlcli.commands.export import run_onnx, run_torchscript, sample_inputs, to_onnx, to_torchscript
    from dlcli.data import sequence_shape
    from dlcli.inputs import Prepared
    from dlcli.models import build_model
    from dlcli.settings import RecurrentSettings, ResNetSettings

    spec = ResNetSettings(depth=8, width=8) if name == "resnet" else RecurrentSettings(cell="lstm", hidden=16)
    record = {
        "kind": "images",
        "shape": [1, 28, 28],
        "mean": [0.13],
        "std": [0.31],
        "classes": list("0123456789"),
        "sequence": None if name == "resnet" else "rows",
        "features": None,
    }
    model = Prepared(build_model(spec, sequence_shape((1, 28, 28), record["sequence"]), 10), record)
    model = model.float().eval()  # float32 as trained, whatever default dtype an earlier test left
    x = sample_inputs(record, 5, seed=1)
    with torch.inference_mode():
        wanted = model(x)
    for fmt in formats:
        path = tmp_path / f"model.{fmt}"
        path.write_bytes((to_onnx if fmt == "onnx" else to_torchscript)(model, sample_inputs(record, 8)))
        got = (run_onnx if fmt == "onnx" else run_torchscript)(path, x)
        assert got.shape == (5, 10) and torch.allclose(got, wanted, atol=1e-5), fmt


def test_export_never_replaces_another_kind_of_file(lenet, dlcli, tmp_path):
    where, best, _ = lenet
    before = best.read_bytes()
    proc = dlcli("export", f"checkpoint={best}", "format=torchscript", f"out={best}")
    assert proc.returncode == 2 and "is not a TorchScript file" in proc.stderr, proc.stderr
    assert best.read_bytes() == before
    (tmp_path / "notes.onnx").write_text("my notes")  # the right name is not enough: the content decides
    proc = dlcli("export", f"checkpoint={best}", "out=notes.onnx")
    assert proc.returncode == 2 and "is not an ONNX file" in proc.stderr, proc.stderr
    assert (tmp_path / "notes.onnx").read_text() == "my notes"
    proc = dlcli("export", f"checkpoint={best}", "format=tflite")
    assert proc.returncode == 2 and "format='tflite' is invalid: onnx or torchscript" in proc.stderr, proc.stderr


def mann_whitney_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUC as the rank statistic: (rank sum of the positives − its least value) / (n+ · n−), tied
    scores sharing their mean rank."""
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based ranks of each run of equal scores
    ranks = mean_rank[inverse]
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binned_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    confidence, right = probabilities.max(1), probabilities.argmax(1) == labels
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = ((confidence > lo) | (b == 0)) & (confidence <= hi)  # (lo, hi], the first with 0
        if inside.any():
            total += inside.sum() / len(labels) * abs(right[inside].mean() - confidence[inside].mean())
    return total


@pytest.mark.slow
def test_eval_shows_where_the_model_fails_and_its_auc_and_ece_match_a_computation_of_their_own(
    lenet, mnist_root, dlcli, tmp_path
):
    from dlcli.inputs import restore

    _, best, summary = lenet
    proc = dlcli("eval", f"checkpoint={best}", "top_losses=12", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    for picture in ("roc.png", "precision_recall.png", "reliability.png", "top_losses.png"):
        assert (tmp_path / "ev" / picture).read_bytes()[:4] == b"\x89PNG", picture
    assert report["acc"] == summary["test_acc"] and report["ece_bins"] == 15

    images, labels = mnist_test_images(mnist_root)
    model = restore(best, []).model
    with torch.inference_mode():
        logits = torch.cat(
            [model(torch.from_numpy(images[i : i + 2000, None] / 255).float()) for i in range(0, 10_000, 2000)]
        )
    probabilities = logits.double().softmax(1).numpy()
    auc = [mann_whitney_auc(probabilities[:, k], labels == k) for k in range(10)]
    assert report["roc_auc"] == pytest.approx(auc, abs=1e-6)
    assert report["roc_auc_macro"] == pytest.approx(np.mean(auc), abs=1e-6)
    assert report["ece"] == pytest.approx(binned_ece(probabilities, labels, 15), abs=1e-6)
    assert 0.99 < report["roc_auc_macro"] < 1 and 0 < report["ece"] < 0.05  # measured: 0.9996 and 0.0074

    confusion = np.array(report["confusion"])
    precision = confusion.diagonal() / confusion.sum(0)
    recall = confusion.diagonal() / confusion.sum(1)
    assert report["per_class_precision"] == pytest.approx(precision)
    assert report["per_class_recall"] == pytest.approx(recall)
    assert report["f1_macro"] == pytest.approx(np.mean(2 * precision * recall / (precision + recall)))
    assert 0.98 < report["average_precision_macro"] == pytest.approx(np.mean(report["average_precision"]))
    off = confusion - np.diag(confusion.diagonal())
    worst = report["confused_pairs"][0]
    assert worst["count"] == off.max() and off[int(worst["true"]), int(worst["predicted"])] == off.max()
    assert [p["count"] for p in report["confused_pairs"]] == np.sort(off, axis=None)[::-1][:10].tolist()
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in proc.stdout.splitlines()]
    assert [worst["true"], worst["predicted"], str(worst["count"])] in [row[:3] for row in rows]
    assert "macro ROC AUC" in proc.stdout and "precision" in proc.stdout
