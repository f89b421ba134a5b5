"""Optimizers and schedules are torch.optim's, built from the config: what dlcli adds is checked here."""

import pytest
import torch
from torch import nn

from dlcli.errors import CheckpointError, ConfigError
from dlcli.optim import build_optimizer, build_schedule, load_optimizer_state, optimizer_state
from dlcli.settings import SCHEMAS, CosineSettings, Custom, OneCycleSettings, PlateauSettings, StepSettings

CPU = torch.device("cpu")


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("option", sorted(SCHEMAS["optimizer"]))
def test_every_option_builds_its_torch_optim_class_with_the_configs_values(option):
    spec = SCHEMAS["optimizer"][option]()
    opt = build_optimizer(spec, net(), CPU)
    assert f"torch.optim.{type(opt).__name__}" == spec._target_
    assert all(g["lr"] == spec.lr for g in opt.param_groups)
    decay, rest = opt.param_groups  # weights, then biases and batch-norm parameters
    assert decay["weight_decay"] == spec.weight_decay and rest["weight_decay"] == 0.0
    assert [p.dim() for p in decay["params"]] == [2, 2] and all(p.dim() == 1 for p in rest["params"])


def test_any_torch_optim_class_can_be_named():
    opt = build_optimizer(Custom("torch.optim.NAdam", {"lr": 0.01, "weight_decay": 0.1}), net(), CPU)
    assert isinstance(opt, torch.optim.NAdam) and opt.param_groups[1]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    "spec,needle",
    [
        (Custom("torch.optim.SGD", {"lr": 0.1, "betas": [0.9, 0.99]}), "refused its settings"),
        (Custom("torch.optim.Adam", {"lr": -1.0}), "Invalid learning rate"),
        (Custom("torch.optim.Lamb", {"lr": 0.1}), "cannot be imported"),
        (Custom("torch.nn.Linear", {"lr": 0.1}), "is not a torch.optim.Optimizer"),
    ],
)
def test_an_optimizer_that_does_not_fit_is_one_line(spec, needle):
    with pytest.raises(ConfigError) as info:
        build_optimizer(spec, net(), CPU)
    assert needle in str(info.value) and "\n" not in str(info.value)


def steps(schedule, optimizer, n):
    lrs = []
    for _ in range(n):
        optimizer.step()
        schedule.after_step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_cosine_runs_over_every_step_of_the_run():
    opt = build_optimizer(SCHEMAS["optimizer"]["sgd"](lr=0.1), net(), CPU)
    schedule = build_schedule(CosineSettings(eta_min=0.001), opt, epochs=2, steps_per_epoch=5)
    assert schedule.scheduler.T_max == 10
    lrs = steps(schedule, opt, 10)
    assert lrs[4] == pytest.approx(0.001 + (0.1 - 0.001) / 2) and lrs[-1] == pytest.approx(0.001)


def test_one_cycle_peaks_at_the_configured_lr_and_stays_put_past_its_end():
    opt = build_optimizer(SCHEMAS["optimizer"]["adamw"](lr=0.01), net(), CPU)
    schedule = build_schedule(OneCycleSettings(pct_start=0.3), opt, epochs=2, steps_per_epoch=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / 25)
    lrs = steps(schedule, opt, 25)  # a resumed run may go on past the planned 20 steps
    assert max(lrs) == pytest.approx(0.01) and lrs[-1] == lrs[19]


def test_step_and_plateau_move_once_per_epoch():
    opt = build_optimizer(SCHEMAS["optimizer"]["sgd"](lr=0.1), net(), CPU)
    schedule = build_schedule(StepSettings(step_size=2, gamma=0.5), opt, epochs=6, steps_per_epoch=3)
    steps(schedule, opt, 3)
    assert opt.param_groups[0]["lr"] == 0.1
    for _ in range(2):
        schedule.after_epoch(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    opt = build_optimizer(SCHEMAS["optimizer"]["sgd"](lr=0.1), net(), CPU)
    schedule = build_schedule(PlateauSettings(factor=0.1, patience=0), opt, epochs=6, steps_per_epoch=3)
    schedule.after_epoch(1.0)
    schedule.after_epoch(2.0)  # no better than 1.0: one reduction
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("target", ["torch.optim.Adam", "torch.nn.Linear", "collections.OrderedDict"])
def test_a_schedule_that_is_no_lr_scheduler_is_one_line(target):
    """A run's schedule is what a checkpoint's may be (dlcli.targets): a torch.optim.lr_scheduler class."""
    opt = build_optimizer(SCHEMAS["optimizer"]["sgd"](lr=0.1), net(), CPU)
    with pytest.raises(ConfigError) as info:
        build_schedule(Custom(target, {}), opt, epochs=2, steps_per_epoch=3)
    assert f"scheduler._target_={target} is not a torch.optim.lr_scheduler class" in str(info.value)


def test_a_resume_checks_the_optimizer_and_schedule_it_continues():
    model = net()
    opt = build_optimizer(SCHEMAS["optimizer"]["adamw"](), model, CPU)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    saved = optimizer_state("torch.optim.AdamW", opt)
    again = build_optimizer(SCHEMAS["optimizer"]["adamw"](), net(), CPU)
    load_optimizer_state("torch.optim.AdamW", again, saved)
    assert again.state_dict()["state"][0]["step"] == 1
    with pytest.raises(CheckpointError, match="optimizer is torch.optim.AdamW, not this run's torch.optim.SGD"):
        load_optimizer_state("torch.optim.SGD", build_optimizer(SCHEMAS["optimizer"]["sgd"](), net(), CPU), saved)
    schedule = build_schedule(CosineSettings(), opt, epochs=1, steps_per_epoch=4)
    with pytest.raises(CheckpointError, match="lr schedule is torch.optim.lr_scheduler.CosineAnnealingLR, not"):
        build_schedule(StepSettings(), again, 1, 4).load_state_dict(schedule.state_dict())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_kernels_on_cuda():
    opt = build_optimizer(SCHEMAS["optimizer"]["adamw"](), net().cuda(), torch.device("cuda"))
    assert opt.defaults["fused"] is True
