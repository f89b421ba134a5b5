"""Model shapes and parameter counts, straight from the builders."""

import pytest
import torch
from torch import nn

from dlcli.errors import ConfigError
from dlcli.models import LeNet5, build_model, count_parameters
from dlcli.settings import AlexNetSettings, Custom, LeNetSettings, MLPSettings, kwargs_of


def lenet(input_shape, **changes):
    return LeNet5(input_shape=input_shape, num_classes=10, **{**kwargs_of(LeNetSettings()), **changes})


SHAPES = {"toy": ((2,), 3), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}


def test_lenet5_has_exactly_61706_parameters_on_mnist():
    model = lenet((1, 28, 28))
    assert count_parameters(model) == 61_706
    # C1 6@5x5, C3 16@5x5, F5 120, F6 84, output 10 — the 1998 layer sizes
    assert model.c1.weight.shape == (6, 1, 5, 5) and model.c3.weight.shape == (16, 6, 5, 5)
    assert model.f5.weight.shape == (120, 400) and model.f6.weight.shape == (84, 120)
    assert model.c1.padding == (2, 2)  # 28x28 padded to the paper's 32x32


def test_lenet5_on_cifar_needs_no_padding():
    model = lenet((3, 32, 32))
    assert model.c1.padding == (0, 0) and count_parameters(model) == 61_706 + 2 * 150


@pytest.mark.parametrize("pooling", ["max", "avg", "lp"])
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu"])
def test_lenet5_every_activation_and_pooling(act, pooling):
    model = lenet((1, 28, 28), activation=act, pooling=pooling)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_l2_pooling_is_the_root_of_the_sum_of_squares():
    model = lenet((1, 28, 28), pooling="lp")
    x = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])
    assert model.s2(x).item() == pytest.approx(5.0)


MODEL_SETTINGS = {
    "mlp": MLPSettings(depth=2, width=16),
    "alexnet": AlexNetSettings(width=0.125),
    "lenet": LeNetSettings(),
}


# CNNs on 2-D points are refused, so only the MLP meets the toy shape
@pytest.mark.parametrize("name,data", [(m, d) for m in MODEL_SETTINGS for d in SHAPES if m == "mlp" or d != "toy"])
def test_every_model_runs_on_every_image_shape(name, data):
    shape, classes = SHAPES[data]
    model = build_model(MODEL_SETTINGS[name], shape, classes)
    assert model(torch.randn(4, *shape)).shape == (4, classes)


def test_mlp_depth_zero_is_softmax_regression():
    model = build_model(MLPSettings(depth=0), (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and count_parameters(model) == 784 * 10 + 10


def test_mlp_width_list_gives_one_width_per_layer():
    model = build_model(MLPSettings(depth=3, width=[64, 32, 16]), (2,), 3)
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [64, 32, 16, 3]
    assert count_parameters(model) == (2 * 64 + 64) + (64 * 32 + 32) + (32 * 16 + 16) + (16 * 3 + 3)


def test_mlp_layer_computes_b_plus_w_h_then_g():
    model = build_model(MLPSettings(depth=1, width=5, activation="tanh", dropout=0.0), (2,), 3)
    h = torch.randn(7, 2)
    layer = model.hidden[0].linear
    expected = torch.tanh(h @ layer.weight.T + layer.bias)
    assert torch.allclose(model.hidden(h), expected)


def test_mlp_batch_norm_and_dropout():
    model = build_model(MLPSettings(depth=2, width=8, batch_norm=True, dropout=0.5), (2,), 2)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2
    assert model(torch.randn(5, 2)).shape == (5, 2)


@pytest.mark.parametrize("init", ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal"])
def test_init_schemes_zero_the_biases(init):
    torch.manual_seed(0)
    model = build_model(MLPSettings(depth=2, width=256, init=init), (1, 28, 28), 10)
    first = model.hidden[0].linear
    assert torch.count_nonzero(first.bias) == 0
    if init == "normal":
        assert first.weight.std().item() == pytest.approx(0.01, rel=0.05)
    if init == "xavier_normal":
        assert first.weight.std().item() == pytest.approx((2 / (784 + 256)) ** 0.5, rel=0.05)


def test_alexnet_has_five_convs_three_linears_and_a_width_multiplier():
    small = build_model(AlexNetSettings(width=0.25), (3, 32, 32), 10)
    big = build_model(AlexNetSettings(width=0.5), (3, 32, 32), 10)
    assert sum(isinstance(m, nn.Conv2d) for m in small.modules()) == 5
    assert sum(isinstance(m, nn.Linear) for m in small.modules()) == 3
    assert [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)] == [16, 48, 96, 64, 64]
    assert count_parameters(big) > 3 * count_parameters(small)


def test_a_cnn_on_2d_points_is_one_line():
    with pytest.raises(ConfigError, match="LeNet5 needs images"):
        build_model(LeNetSettings(), (2,), 3)


class Net(nn.Module):
    """A user's own model: dlcli passes input_shape and num_classes, the rest comes from the config."""

    def __init__(self, input_shape, num_classes, hidden):
        super().__init__()
        self.input_shape = input_shape
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(int(torch.tensor(input_shape).prod()), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.body(x)


class WrongOutput(Net):
    def forward(self, x):
        return super().forward(x)[:, :3]


def not_a_module(input_shape, num_classes):
    return None


def test_a_users_class_is_built_by_its_target_with_input_shape_as_a_tuple():
    model = build_model(Custom(f"{__name__}.Net", {"hidden": 7}), (1, 28, 28), 10)
    assert isinstance(model, Net) and model.input_shape == (1, 28, 28) and model.body[1].out_features == 7


@pytest.mark.parametrize(
    "target,kwargs,needle",
    [
        ("no_such_module.Net", {}, "cannot be imported"),
        (f"{__name__}.not_a_module", {}, "is not a torch.nn.Module class"),
        (f"{__name__}.Net", {"hiden": 7}, "rejected its arguments"),
        (f"{__name__}.WrongOutput", {"hidden": 7}, "expected (2, 10): one logit per class"),
        (f"{__name__}.Net", {"hidden": 7, "num_classes": 3}, "set by dlcli from the data"),
    ],
)
def test_a_users_class_that_does_not_fit_is_one_line(target, kwargs, needle):
    with pytest.raises(ConfigError) as info:
        build_model(Custom(target, kwargs), (1, 28, 28), 10)
    assert needle in str(info.value) and "\n" not in str(info.value)
