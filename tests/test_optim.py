"""dlcli's optimizers and lr schedules against torch.optim: same trajectories, step for step."""

import math

import pytest
import torch
from torch import nn

from dlcli.errors import CheckpointError
from dlcli.optim import Adagrad, Adam, AdamW, RMSprop, SGD, build_schedule
from dlcli.settings import SchedulerSettings

CASES = [
    ("sgd plain", lambda g: SGD(g, lr=0.1), lambda g: torch.optim.SGD(g, lr=0.1)),
    ("sgd momentum", lambda g: SGD(g, lr=0.05, momentum=0.9),
     lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.9)),
    ("sgd nesterov", lambda g: SGD(g, lr=0.05, momentum=0.8, nesterov=True),
     lambda g: torch.optim.SGD(g, lr=0.05, momentum=0.8, nesterov=True)),
    ("adam", lambda g: Adam(g, lr=0.01, betas=(0.8, 0.99)), lambda g: torch.optim.Adam(g, lr=0.01, betas=(0.8, 0.99))),
    ("adamw", lambda g: AdamW(g, lr=0.01), lambda g: torch.optim.AdamW(g, lr=0.01)),
    ("rmsprop", lambda g: RMSprop(g, lr=0.01), lambda g: torch.optim.RMSprop(g, lr=0.01)),
    ("rmsprop momentum", lambda g: RMSprop(g, lr=0.01, momentum=0.5, alpha=0.9),
     lambda g: torch.optim.RMSprop(g, lr=0.01, momentum=0.5, alpha=0.9)),
    ("adagrad", lambda g: Adagrad(g, lr=0.1), lambda g: torch.optim.Adagrad(g, lr=0.1)),
]


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weights decayed, biases not (for this all-Linear net, the split build_optimizer makes)."""
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    biases = [m.bias for m in model if isinstance(m, nn.Linear)]
    return [{"params": weights, "weight_decay": weight_decay}, {"params": biases, "weight_decay": 0.0}]


def trajectory(make, weight_decay: float, steps: int = 12, schedule=None) -> list[torch.Tensor]:
    model = net()
    opt = make(groups(model, weight_decay))
    sched = schedule(opt) if schedule else None
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched()
        seen.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
    return seen


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_same_trajectory_as_torch_optim(name, ours, theirs, weight_decay):
    mine, reference = trajectory(ours, weight_decay), trajectory(theirs, weight_decay)
    assert not torch.equal(mine[0], mine[-1])  # it moved
    for a, b in zip(mine, reference):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_biases_are_never_decayed():
    model = net()
    opt = SGD(groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only decay could move a parameter
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    moved = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert moved == [True, False, True, False]  # weight, bias, weight, bias


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_state_dict_round_trip_continues_exactly(name, ours, theirs):
    """Stop after 5 steps, load the state into a fresh optimizer, go on: same as never stopping."""
    straight = trajectory(ours, 0.1, steps=8)
    model = net()
    opt = ours(groups(model, 0.1))
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))

    def step(o):
        o.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        o.step()

    for _ in range(5):
        step(opt)
    again = ours(groups(model, 0.1))
    again.load_state_dict(opt.state_dict())
    for _ in range(3):
        step(again)
    assert torch.equal(torch.cat([p.detach().flatten() for p in model.parameters()]), straight[-1])


def test_state_of_another_optimizer_is_refused():
    model = net()
    with pytest.raises(CheckpointError, match="optimizer state is for SGD, not this run's Adam"):
        Adam(groups(model, 0.0), lr=0.1).load_state_dict(SGD(groups(model, 0.0), lr=0.1).state_dict())


SCHEDULES = [
    ("cosine", SchedulerSettings("cosine", min_lr=0.001),
     lambda o, total: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.001)),
    ("onecycle", SchedulerSettings("onecycle", pct_start=0.3),
     lambda o, total: torch.optim.lr_scheduler.OneCycleLR(
         o, max_lr=[g["lr"] for g in o.param_groups], total_steps=total, pct_start=0.3,
         cycle_momentum="betas" in o.defaults or o.defaults.get("momentum", 0) > 0)),
]


@pytest.mark.parametrize("opt_name", ["sgd momentum", "adamw"])
@pytest.mark.parametrize("name,settings,theirs", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_per_step_schedules_match_torch(name, settings, theirs, opt_name):
    """lr and the cycled momentum (SGD's momentum, Adam's beta1) follow torch's schedulers step for step."""
    ours_opt, theirs_opt = {c[0]: c[1:] for c in CASES}[opt_name]
    total = 20
    model_a, model_b = net(), net()
    a = ours_opt(groups(model_a, 0.0))
    b = theirs_opt(groups(model_b, 0.0))
    for g in (*a.param_groups, *b.param_groups):
        g["lr"] = 0.05
    ours = build_schedule(settings, a, epochs=4, steps_per_epoch=5)
    ref = theirs(b, total)
    for _ in range(total):
        for key in ("lr", "momentum", "betas"):
            if key in b.param_groups[0]:
                assert a.param_groups[0][key] == pytest.approx(b.param_groups[0][key], rel=1e-9), key
        b.step()
        ref.step()
        ours.after_step()


SCHEDULED = ["sgd nesterov", "adam", "adamw", "rmsprop momentum", "adagrad"]


@pytest.mark.parametrize("opt_name", SCHEDULED)
@pytest.mark.parametrize("name,settings,theirs", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_scheduled_trajectories_match_torch(name, settings, theirs, opt_name):
    """Parameters, step for step, under a per-step schedule: the lr and momentum reach the update."""
    ours_opt, theirs_opt = {c[0]: c[1:] for c in CASES}[opt_name]
    total = 15
    mine = trajectory(ours_opt, 0.1, steps=total,
                      schedule=lambda o: build_schedule(settings, o, epochs=3, steps_per_epoch=5).after_step)

    expected = trajectory(theirs_opt, 0.1, steps=total, schedule=lambda o: theirs(o, total).step)
    for a, b in zip(mine, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resume_mid_schedule_through_a_saved_file_continues_exactly(tmp_path):
    """Save optimizer and one-cycle state to disk after 6 of 12 steps, load both fresh, finish: same weights."""
    settings = SchedulerSettings("onecycle", pct_start=0.3)
    x = torch.randn(16, 5, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))

    def run(model, opt, sched, steps):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.after_step()

    straight = net()
    opt = AdamW(groups(straight, 0.1), lr=0.01)
    run(straight, opt, build_schedule(settings, opt, epochs=2, steps_per_epoch=6), 12)

    first = net()
    opt = AdamW(groups(first, 0.1), lr=0.01)
    sched = build_schedule(settings, opt, epochs=2, steps_per_epoch=6)
    run(first, opt, sched, 6)
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
               tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    second = net()
    second.load_state_dict(saved["model"])
    opt = AdamW(groups(second, 0.1), lr=0.5)  # another lr in the config: the checkpoint's run goes on
    sched = build_schedule(settings, opt, epochs=9, steps_per_epoch=6)
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    run(second, opt, sched, 6)
    for a, b in zip(straight.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_plateau_stops_reducing_below_torchs_1e_8_step():
    a, b = SGD(groups(net(), 0.0), lr=1e-6), torch.optim.SGD(groups(net(), 0.0), lr=1e-6)
    ours = build_schedule(SchedulerSettings("plateau", factor=0.1, patience=0), a, epochs=6, steps_per_epoch=1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(b, factor=0.1, patience=0)
    for _ in range(6):
        ours.after_epoch(1.0)
        ref.step(1.0)
        assert [g["lr"] for g in a.param_groups] == pytest.approx([g["lr"] for g in b.param_groups], rel=1e-9)
    assert a.param_groups[0]["lr"] == pytest.approx(1e-8)


def test_cosine_min_lr_is_absolute_for_every_group():
    model = net()
    weights, biases = groups(model, 0.0)
    opt = SGD([{**weights, "lr": 0.1}, {**biases, "lr": 0.01}], lr=0.1)
    sched = build_schedule(SchedulerSettings("cosine", min_lr=0.001), opt, epochs=1, steps_per_epoch=4)
    for _ in range(4):
        sched.after_step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.001, 0.001])


def test_state_with_other_shapes_is_refused():
    model = net()
    with pytest.raises(CheckpointError, match="SGD state does not fit this run"):
        SGD(groups(model, 0.0), lr=0.1).load_state_dict(SGD(groups(model, 0.0), lr=0.1, momentum=0.9).state_dict())


def test_step_and_plateau_schedules_match_torch():
    a, b = SGD(groups(net(), 0.0), lr=0.1), torch.optim.SGD(groups(net(), 0.0), lr=0.1)
    ours = build_schedule(SchedulerSettings("step", step_size=2, gamma=0.5), a, epochs=7, steps_per_epoch=3)
    ref = torch.optim.lr_scheduler.StepLR(b, step_size=2, gamma=0.5)
    for _ in range(7):
        assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"])
        b.step()
        ref.step()
        ours.after_epoch(1.0)

    a, b = SGD(groups(net(), 0.0), lr=0.1), torch.optim.SGD(groups(net(), 0.0), lr=0.1)
    ours = build_schedule(SchedulerSettings("plateau", factor=0.5, patience=1), a, epochs=9, steps_per_epoch=3)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(b, factor=0.5, patience=1)
    for val_loss in [1.0, 0.9, 0.95, 0.9, 0.89995, 0.8, 0.85, 0.86, 0.87]:
        b.step()
        ref.step(val_loss)
        ours.after_epoch(val_loss)
        assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"])
    assert a.param_groups[0]["lr"] < 0.1 / 3  # it did reduce, twice


def test_cosine_reaches_min_lr_at_the_last_step():
    opt = SGD(groups(net(), 0.0), lr=0.2)
    sched = build_schedule(SchedulerSettings("cosine", min_lr=0.002), opt, epochs=2, steps_per_epoch=5)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        sched.after_step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.2 and math.isclose(lrs[5], 0.101) and math.isclose(lrs[-1], 0.002)


def test_the_fp16_loss_scaler_drives_dlclis_optimizer():
    """GradScaler (fp16 on CUDA) unscales through param_groups and skips steps whose gradients overflowed."""
    model = net()
    opt = SGD(groups(model, 0.0), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # the same logic as on CUDA, runnable here
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    scaler.unscale_(opt)
    unscaled = model[0].weight.grad.clone()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(unscaled, model[0].weight.grad)  # divided by the scale again
    scaler.step(opt)
    scaler.update()
    assert opt.steps == 1
    opt.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    model[0].weight.grad[0, 0] = float("inf")
    before = model[0].weight.detach().clone()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(before, model[0].weight) and opt.steps == 1  # skipped, not counted
    assert scaler.get_scale() == 512.0
