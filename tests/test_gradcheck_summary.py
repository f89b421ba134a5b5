"""`dlcli gradcheck` and `dlcli summary`: backprop against central differences; the model as a table."""

import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from dlcli.commands.gradcheck import check_gradients
from dlcli.commands.summary import layer_table
from dlcli.data import data_shape
from dlcli.losses import build_loss
from dlcli.models import build_model, count_parameters
from dlcli.regularization import build_penalty
from dlcli.settings import ACTIVATIONS, SCHEMAS, load_settings

MODEL_DATA = {"mlp": "toy", "lenet": "mnist", "alexnet": "cifar10"}


def compose_cfg(name: str, *overrides: str):
    with initialize_config_module("dlcli.configs", version_base="1.3"):
        return compose(name, overrides=list(overrides))


def gradcheck(*overrides: str, samples: int = 6):
    settings = load_settings(compose_cfg("gradcheck", *overrides))
    torch.manual_seed(0)
    shape, classes = data_shape(settings.data)
    model = build_model(settings.model, shape, classes).double().eval()
    x, y = torch.randn(3, *shape, dtype=torch.float64), torch.arange(3) % classes
    penalty = build_penalty(settings.regularization, model)
    results, _, _ = check_gradients(model, build_loss(settings.loss), penalty, x, y, samples, 1e-6, 1e-6, 1e-9)
    return results


@pytest.mark.parametrize("regularization", list(SCHEMAS["regularization"]))
@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "mse", "hinge"])
@pytest.mark.parametrize("model", ["mlp", "lenet", "alexnet"])
def test_gradcheck_passes_for_every_model_loss_and_regularizer(model, loss, regularization):
    extra = ["model.width=0.125"] if model == "alexnet" else ["model.width=16"] if model == "mlp" else []
    results = gradcheck(
        f"model={model}",
        f"data={MODEL_DATA[model]}",
        f"loss={loss}",
        f"regularization={regularization}",
        *([] if regularization == "none" else ["regularization.strength=1e-3"]),
        *extra,
    )
    assert all(r.passed for r in results), [(r.name, r.max_rel) for r in results if not r.passed]
    assert sum(r.checked - r.kinks for r in results) > 0


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_passes_for_every_activation(activation):
    assert all(r.passed for r in gradcheck("model.width=8", f"model.activation={activation}", "model.depth=3"))


class DoubledBackward(torch.autograd.Function):
    """tanh whose backward is twice the truth: a planted bug."""

    @staticmethod
    def forward(ctx, a):
        h = torch.tanh(a)
        ctx.save_for_backward(h)
        return h

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return 2 * grad * (1 - h * h)


class BrokenMLP(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.first = nn.Linear(input_shape[0], 8)
        self.output = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.output(DoubledBackward.apply(self.first(x)))


def test_gradcheck_fails_on_a_wrong_backward_and_names_the_layer(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dlcli"])
    from dlcli.cli import main

    with pytest.raises(SystemExit) as info:  # a user's model, by its _target_ like any other
        main(["gradcheck", "data=toy", "model=custom", f"model._target_={__name__}.BrokenMLP", "gradcheck.samples=0"])
    assert info.value.code == 1
    out = capsys.readouterr()
    assert "gradient check failed for first.weight, first.bias" in out.err
    assert "FAIL" in out.out and "output.weight" in out.out  # the layer after the bug is still right


@pytest.mark.slow
def test_gradcheck_cli_passes_lenet_in_one_table(dlcli):
    proc = dlcli("gradcheck", "model=lenet", "data=mnist")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "PASS" in proc.stdout and "c1.weight" in proc.stdout and "output.bias" in proc.stdout
    assert proc.stdout.count("gradient check:") == 1


@pytest.mark.parametrize("model", ["mlp", "lenet", "alexnet"])
def test_summary_counts_equal_the_real_model(model):
    settings = load_settings(compose_cfg("summary", f"model={model}", f"data={MODEL_DATA[model]}"))
    shape, classes = data_shape(settings.data)
    net = build_model(settings.model, shape, classes)
    rows = layer_table(net, shape)
    assert sum(r.params for r in rows) == count_parameters(net)
    assert rows[-1].output_shape == (classes,)


@pytest.mark.slow
def test_summary_lenet_macs_and_cli(dlcli):
    net = build_model(load_settings(compose_cfg("summary", "model=lenet", "data=mnist")).model, (1, 28, 28), 10)
    rows = {r.name: r for r in layer_table(net, (1, 28, 28))}
    assert rows["c1"].macs == 6 * 28 * 28 * 25 and rows["c3"].macs == 16 * 10 * 10 * 150
    assert rows["f5"].macs == 400 * 120 and rows["s4"].output_shape == (16, 5, 5)
    proc = dlcli("summary", "model=lenet", "data=mnist")
    assert proc.returncode == 0, proc.stderr
    assert "61,706" in proc.stdout and "416,520" in proc.stdout
