"""Each loss and penalty: its value from the formula, and its gradient against central differences."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import FAST_TOY
from dlcli.errors import ConfigError
from dlcli.losses import build_loss
from dlcli.optim import build_optimizer
from dlcli.regularization import build_penalty, penalized_weights
from dlcli.settings import SCHEMAS, Custom, SGDSettings

LOSSES = list(SCHEMAS["loss"])


@pytest.fixture(autouse=True)
def float64():
    """Central differences need float64; set for this module's tests alone, not for every test
    the session runs after collecting it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def numerical_grad(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """(f(x + h e_i) - f(x - h e_i)) / 2h for every coordinate i."""
    grad = torch.zeros_like(x)
    flat, g = x.view(-1), grad.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + h
        up = f().item()
        flat[i] = old - h
        down = f().item()
        flat[i] = old
        g[i] = (up - down) / (2 * h)
    return grad


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1, 2])


@pytest.mark.parametrize("name", LOSSES)
def test_loss_gradient_matches_central_differences(name, batch):
    z, y = batch
    loss_fn = build_loss(SCHEMAS["loss"][name]())
    z = z.clone().requires_grad_(True)
    loss_fn(z, y).backward()
    with torch.no_grad():
        numeric = numerical_grad(lambda: loss_fn(z, y), z.detach())
    assert torch.allclose(z.grad, numeric, rtol=1e-6, atol=1e-8)


def test_cross_entropy_and_nll_are_minus_log_softmax_of_the_label(batch):
    z, y = batch
    expected = -torch.log(torch.softmax(z, 1)[torch.arange(6), y]).mean()
    for name in ("cross_entropy", "nll"):
        assert build_loss(SCHEMAS["loss"][name]())(z, y).item() == pytest.approx(expected.item(), rel=1e-12)


def test_quadratic_loss_is_half_squared_error_on_probabilities(batch):
    z, y = batch
    p = torch.softmax(z, 1)
    expected = sum(0.5 * ((p[i] - F.one_hot(y[i], 4)) ** 2).sum() for i in range(6)) / 6
    assert build_loss(SCHEMAS["loss"]["mse"]())(z, y).item() == pytest.approx(expected.item(), rel=1e-12)


def test_hinge_is_the_multiclass_margin(batch):
    z, y = batch
    expected = sum(max(0.0, 1 - z[i, y[i]] + z[i, j]) for i in range(6) for j in range(4) if j != y[i]) / (6 * 4)
    assert build_loss(SCHEMAS["loss"]["hinge"]())(z, y).item() == pytest.approx(float(expected), rel=1e-12)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def penalty_of(name: str, net, l1_ratio: float = 0.5):
    """The regularization option `name` at strength 0.3, built as dlcli train builds it."""
    keys = {"l1_ratio": l1_ratio} if name == "elastic" else {}
    return build_penalty(SCHEMAS["regularization"][name](strength=0.3, **keys), net)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("l2", lambda ws: 0.3 * sum((w**2).sum() for w in ws)),
        ("l1", lambda ws: 0.3 * sum(w.abs().sum() for w in ws)),
        ("elastic", lambda ws: 0.3 * sum(0.25 * w.abs().sum() + 0.75 * (w**2).sum() for w in ws)),
    ],
)
def test_penalty_value_is_exact_and_counts_weights_only(name, expected):
    net = tiny_net()
    weights = penalized_weights(net)
    assert [tuple(w.shape) for w in weights] == [(2, 1, 3, 3), (3, 8)]  # no bias, no batch-norm scale
    penalty = penalty_of(name, net, l1_ratio=0.25)
    assert penalty().item() == pytest.approx(expected(weights).item(), rel=1e-12)


@pytest.mark.parametrize("name", ["l2", "l1", "elastic"])
def test_penalty_gradient_matches_central_differences_and_skips_biases(name):
    net = tiny_net()
    penalty = penalty_of(name, net, l1_ratio=0.5)
    penalty().backward()
    for module in (net[0], net[3]):
        assert module.bias.grad is None or torch.count_nonzero(module.bias.grad) == 0
        with torch.no_grad():
            numeric = numerical_grad(penalty, module.weight.data)
        assert torch.allclose(module.weight.grad, numeric, rtol=1e-6, atol=1e-8)
    assert net[1].weight.grad is None  # batch-norm scale untouched


def test_l2_gradient_is_two_lambda_w():
    net = tiny_net()
    penalty_of("l2", net)().backward()
    assert torch.allclose(net[3].weight.grad, 2 * 0.3 * net[3].weight)


def test_optimizer_weight_decay_skips_biases_and_norms():
    net = tiny_net()
    net[0].bias.requires_grad_(False)  # frozen: no optimizer group holds it
    opt = build_optimizer(SGDSettings(lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.5), net, torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(net[0].weight), id(net[3].weight)}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters())) - 1
    assert isinstance(opt, torch.optim.SGD)


def test_a_loss_target_that_builds_no_module_is_one_line():
    """A run's loss is what a checkpoint's may be (dlcli.targets): a torch.nn.Module."""
    with pytest.raises(ConfigError) as info:
        build_loss(Custom("builtins.dict", {}))
    assert "loss._target_=builtins.dict built a dict, not a torch.nn.Module" in str(info.value)
    assert isinstance(build_loss(Custom("torch.nn.CrossEntropyLoss", {"label_smoothing": 0.1})), nn.Module)


def test_a_penalty_target_that_is_no_penalty_class_is_one_line():
    for target in ("builtins.dict", "torch.nn.Linear"):
        with pytest.raises(ConfigError) as info:
            build_penalty(Custom(target, {}), tiny_net())
        assert f"regularization._target_={target} is invalid: it is not a subclass of dlcli.regularization.Penalty" in (
            str(info.value)
        )
    with pytest.raises(ConfigError, match=r"regularization._target_=dlcli.regularization.L2 could not be built"):
        build_penalty(Custom("dlcli.regularization.L2", {"strenght": 0.1}), tiny_net())


def test_a_penalty_of_your_own_is_trained_with(dlcli, tmp_path):
    """regularization._target_ names a Penalty subclass in the run's folder; training adds it to the loss."""
    (tmp_path / "my_penalties.py").write_text(
        "from dlcli.regularization import Penalty\n"
        "class Counted(Penalty):\n"
        "    calls = 0\n"
        "    def __init__(self, weights, strength):\n"
        "        super().__init__(weights, l2=strength)\n"
        "    def __call__(self):\n"
        "        Counted.calls += 1\n"
        "        open('calls.txt', 'w').write(str(Counted.calls))\n"
        "        return super().__call__()\n"
    )
    proc = dlcli(
        "train",
        *FAST_TOY,
        "trainer.epochs=1",
        "regularization._target_=my_penalties.Counted",
        "+regularization.strength=0.01",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr
    assert int((tmp_path / "calls.txt").read_text()) >= 5  # every optimizer step of the epoch


def test_label_smoothing_and_class_weights_are_torchs_cross_entropy():
    z, y = torch.randn(12, 3), torch.tensor([0] * 8 + [1] * 3 + [2])
    smoothed = build_loss(SCHEMAS["loss"]["cross_entropy"](label_smoothing=0.1), y, 3)
    assert smoothed(z, y).item() == pytest.approx(nn.CrossEntropyLoss(label_smoothing=0.1)(z, y).item(), rel=1e-12)
    balanced = build_loss(SCHEMAS["loss"]["cross_entropy"](class_weights="balanced"), y, 3)
    weights = torch.tensor([12 / (3 * 8), 12 / (3 * 3), 12 / (3 * 1)])  # n / (K * n_k)
    assert torch.allclose(balanced.class_weights, weights.to(balanced.class_weights.dtype))
    assert balanced(z, y).item() == pytest.approx(nn.CrossEntropyLoss(weight=weights.double())(z, y).item(), rel=1e-6)
    listed = build_loss(SCHEMAS["loss"]["cross_entropy"](class_weights=[1, 2, 0.5]), y, 3)
    assert listed(z, y).item() == pytest.approx(
        nn.CrossEntropyLoss(weight=torch.tensor([1, 2, 0.5], dtype=torch.float64))(z, y).item(), rel=1e-6
    )
    with pytest.raises(ConfigError, match=r"loss.class_weights=\[1, 2\] is invalid: this data has 3 classes"):
        build_loss(SCHEMAS["loss"]["cross_entropy"](class_weights=[1, 2]), y, 3)


@pytest.mark.parametrize(
    "override,needle",
    [
        ("loss.label_smoothing=1", "loss.label_smoothing=1 is invalid: a number in [0, 1)"),
        ("loss.label_smoothing=-0.1", "loss.label_smoothing=-0.1 is invalid"),
        ("loss.class_weights=[1,-1]", "loss.class_weights=[1, -1] is invalid: null, balanced, or a list"),
        ("loss.class_weights=even", "loss.class_weights='even' is invalid"),
    ],
)
def test_bad_smoothing_or_weights_are_one_line(dlcli, override, needle):
    from conftest import assert_one_line_error

    assert_one_line_error(dlcli("train", *FAST_TOY, override), needle)


def test_a_run_with_balanced_weights_trains_and_its_eval_reports_balanced_accuracy(dlcli, tmp_path):
    import json

    proc = dlcli("train", *FAST_TOY, "loss.class_weights=balanced", "loss.label_smoothing=0.05", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    proc = dlcli("eval", f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'best.pt'}", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    recall = report["per_class_recall"]
    assert len(recall) == 3 and report["balanced_acc"] == pytest.approx(sum(recall) / 3)
    assert "balanced accuracy" in proc.stdout
