"""Gradient flow per layer, the vanishing-gradient comparison, and the pictures dlcli draws."""

import json

import pytest
from test_sweeps import png_size

from conftest import FAST_TOY, read_jsonl

DEEP = [
    "model.depth=6",
    "model.width=32",
    "model.init=kaiming_normal",
    "model.dropout=0",
    "optimizer=sgd",
    "optimizer.lr=0.05",
]


@pytest.mark.slow
def test_diagnostics_has_one_row_per_layer_per_epoch(dlcli, tmp_path):
    proc = dlcli("train", *FAST_TOY, *DEEP, "trainer.epochs=3", "trainer.diagnostics=true", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    rows = read_jsonl(tmp_path / "run" / "diagnostics.jsonl")
    layers = [f"hidden.{i}.linear" for i in range(6)] + ["output"]
    assert [(r["epoch"], r["layer"]) for r in rows] == [(e, layer) for e in (1, 2, 3) for layer in layers]
    for r in rows:
        assert r["grad_norm"] > 0 and r["weight_norm"] > 0 and r["update_ratio"] > 0
        assert r["grad_mean_abs"] <= r["grad_norm"]
    assert all("dead_fraction" in r for r in rows if r["layer"] != "output")
    assert png_size(tmp_path / "run" / "gradient_flow.png")[0] > 400


@pytest.mark.slow
def test_diagnostics_do_not_change_training(dlcli, tmp_path):
    for name, flag in (("off", "false"), ("on", "true")):
        assert (
            dlcli(
                "train", *FAST_TOY, "model.dropout=0.3", f"trainer.diagnostics={flag}", f"hydra.run.dir={name}"
            ).returncode
            == 0
        )

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "samples_per_second")} for r in rows]

    assert strip(read_jsonl(tmp_path / "off" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "on" / "metrics.jsonl"))


@pytest.mark.slow
def test_deep_sigmoid_gets_smaller_early_gradients_than_deep_relu(dlcli, tmp_path):
    proc = dlcli("train", "-m", *FAST_TOY, *DEEP, "trainer.diagnostics=true", "model.activation=sigmoid,relu")
    assert proc.returncode == 0, proc.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    first = {}
    for job in ("0", "1"):
        rows = read_jsonl(sweep / job / "diagnostics.jsonl")
        activation = "sigmoid" if job == "0" else "relu"
        first[activation] = next(r["grad_norm"] for r in rows if r["epoch"] == 1 and r["depth"] == 1)
        if activation == "sigmoid":
            assert all("saturated_fraction" in r for r in rows if r["layer"] != "output")
    assert first["sigmoid"] * 100 < first["relu"], first
    assert png_size(sweep / "sweep_gradient_flow.png")[0] > 400


@pytest.mark.slow
def test_eval_draws_confusion_matrix_and_decision_boundary(dlcli, tmp_path):
    assert dlcli("train", *FAST_TOY, "hydra.run.dir=run").returncode == 0
    proc = dlcli("eval", "checkpoint=run/checkpoints/best.pt", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    assert png_size(tmp_path / "ev" / "confusion_matrix.png")[0] > 300
    assert png_size(tmp_path / "ev" / "decision_boundary.png") == (600, 600)
    assert not (tmp_path / "ev" / "filters.png").exists()  # an MLP has no convolution
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["n"] == 150
