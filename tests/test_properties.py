"""Property-based: any valid combination of choices trains a step; no override ever yields a traceback."""

import math

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from dlcli.cli import hydra_message
from dlcli.data import data_shape
from dlcli.errors import DlcliError
from dlcli.losses import build_loss
from dlcli.models import build_model
from dlcli.optim import build_optimizer, build_schedule
from dlcli.regularization import build_penalty
from dlcli.settings import ACTIVATIONS, SCHEMAS, load_settings


def compose_train(overrides: list[str]):
    with initialize_config_module("dlcli.configs", version_base="1.3"):
        return compose("train", overrides=overrides)


valid_configs = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["mlp", "lenet", "alexnet"]),
        "activation": st.sampled_from(ACTIVATIONS),
        "loss": st.sampled_from(["cross_entropy", "nll", "mse", "hinge"]),
        "regularization": st.sampled_from(list(SCHEMAS["regularization"])),
        "optimizer": st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad"]),
        "scheduler": st.sampled_from(["none", "step", "cosine", "onecycle", "plateau"]),
        "batch_norm": st.booleans(),
    }
)


@pytest.mark.slow
@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs)
def test_any_valid_combination_takes_a_training_step(choice):
    overrides = [f"{g}={choice[g]}" for g in ("model", "loss", "regularization", "optimizer", "scheduler")]
    if choice["model"] == "alexnet":
        overrides += ["data=cifar10", "model.width=0.125"]
    else:
        overrides += [f"model.activation={choice['activation']}"]
        overrides += ["data=mnist"] if choice["model"] == "lenet" else [f"model.batch_norm={choice['batch_norm']}"]
    s = load_settings(compose_train(overrides))
    torch.manual_seed(0)
    shape, classes = data_shape(s.data)
    model = build_model(s.model, shape, classes)
    loss_fn, penalty = build_loss(s.loss), build_penalty(s.regularization, model)
    optimizer = build_optimizer(s.optimizer, model, torch.device("cpu"))
    schedule = build_schedule(s.scheduler, optimizer, epochs=2, steps_per_epoch=3)
    x, y = torch.randn(8, *shape), torch.arange(8) % classes
    before = [p.detach().clone() for p in model.parameters()]
    loss = loss_fn(model(x), y) + (penalty() if penalty.active else 0)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.after_step()
    schedule.after_epoch(float(loss.detach()))
    assert math.isfinite(float(loss.detach()))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


KEYS = [
    "optimizer.lr",
    "optimizer.weight_decay",
    "model.depth",
    "model.width",
    "model.activation",
    "model.dropout",
    "trainer.epochs",
    "trainer.batch_size",
    "trainer.device",
    "trainer.val_fraction",
    "regularization.strength",
    "data.name",
    "data.noise",
    "trainer.seed",
    "scheduler.name",
    "loss.name",
    "trainer.monitor",
    "trainer.nope",
]
values = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True).map(repr),
    st.text(min_size=0, max_size=12),
    st.sampled_from(["", "null", "[1,2]", "[", "true", "1e999"]),
)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=3))
def test_no_override_ever_escapes_as_a_traceback(pairs):
    overrides = [f"{k}={v}" for k, v in pairs]
    try:
        load_settings(compose_train(overrides))
    except DlcliError as exc:
        assert "\n" not in str(exc)
    except (HydraException, OmegaConfBaseException) as exc:
        assert "\n" not in hydra_message(exc)  # what the CLI prints for it
