"""What fixes deep nets: ResNet, the residual MLP, recurrent nets (leaky, LSTM, GRU), and their diagnostics."""

import json

import pytest
import torch
from test_gradcheck_summary import compose_cfg, gradcheck
from torch import nn

from dlcli.commands.summary import layer_table
from dlcli.data import load_data, sequence_shape
from dlcli.errors import ConfigError
from dlcli.models import MLP, BasicBlock, Recurrent, ResNet, Shortcut
from dlcli.settings import ImageDataSettings, MLPSettings, RecurrentSettings, ResNetSettings


def test_resnet_has_n_blocks_per_stage_and_projects_where_the_shape_changes():
    model = ResNet(input_shape=(1, 28, 28), num_classes=10, depth=20, width=16)
    stages = list(model.stages)
    assert [len(s) for s in stages] == [3, 3, 3]  # depth 20 = 6·3 + 2
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 3x3 convolutions and the output layer
    projections = [b for s in stages for b in s if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 2  # into stage 2 (16 -> 32, stride 2) and stage 3 (32 -> 64, stride 2)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert ResNet(input_shape=(3, 32, 32), num_classes=10, depth=8, width=4)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_basic_block_adds_its_input():
    block = BasicBlock(4, 4, 1).eval()
    for p in block.conv2.parameters():
        nn.init.zeros_(p)  # F(x) = 0: the block is relu(x)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(block(x), torch.relu(x))


@pytest.mark.parametrize("depth", [7, 9, 2, 21])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ConfigError, match=r"model.depth=\d+ is invalid: 6n \+ 2"):
        ResNetSettings(depth=depth)


def test_residual_mlp_has_shortcuts_around_the_equal_width_layers():
    model = MLP(
        input_shape=(2,),
        num_classes=3,
        depth=4,
        width=8,
        activation="sigmoid",
        dropout=0.0,
        batch_norm=False,
        init="default",
        residual=True,
    )
    shortcuts = [m for m in model.hidden if isinstance(m, Shortcut)]
    assert len(shortcuts) == 3 and not isinstance(model.hidden[0], Shortcut)
    h = torch.randn(5, 8)
    assert torch.allclose(shortcuts[0](h), h + shortcuts[0].layer(h))
    with pytest.raises(ConfigError, match="one width for every hidden layer"):
        MLPSettings(depth=2, width=[8, 4], residual=True)


def test_leaky_unit_mixes_old_and_new_state():
    torch.manual_seed(0)
    model = Recurrent(input_shape=(5, 3), num_classes=2, cell="rnn", hidden=4, layers=1, leaky=0.75)
    x = torch.randn(2, 5, 3)
    cell, h = model.cells[0], torch.zeros(2, 4)
    for t in range(5):
        h = (
            0.75 * h
            + 0.25
            * torch.tanh(
                cell.weight_ih @ x[:, t].T + cell.bias_ih[:, None] + cell.weight_hh @ h.T + cell.bias_hh[:, None]
            ).T
        )
    assert torch.allclose(model(x), model.output(h), atol=1e-6)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_cells_read_images_row_by_row_and_sequences(cell):
    model = Recurrent(input_shape=(1, 28, 28), num_classes=10, cell=cell, hidden=8, layers=2, leaky=0.0)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert Recurrent(input_shape=(784, 1), num_classes=10, cell=cell, hidden=8, layers=1, leaky=0.0)(
        torch.zeros(2, 784, 1)
    ).shape == (2, 10)


def test_leaky_is_for_the_plain_cell_only():
    with pytest.raises(ConfigError, match="model.leaky=0.5 is invalid: 0 for model.cell=lstm"):
        RecurrentSettings(cell="lstm", leaky=0.5)
    with pytest.raises(ConfigError, match="model.cell='elman' is invalid"):
        RecurrentSettings(cell="elman")


def test_images_as_sequences_of_rows_or_pixels(mnist_root):
    for sequence, shape in (("rows", (28, 28)), ("pixels", (784, 1))):
        spec = ImageDataSettings(root=str(mnist_root), download=False, subset=100, sequence=sequence)
        data = load_data(spec, seed=0, val_fraction=0.1, device=torch.device("cpu"))
        assert data.input_shape == shape == sequence_shape((1, 28, 28), sequence)
        x = data.inputs(data.train.x[:2])
        assert x.shape == (2, *shape)
        image = data.train.x[:2].float() * data.scale - data.shift
        assert torch.allclose(x.reshape(2, 784), image.reshape(2, 784))  # the same pixels, in reading order
    with pytest.raises(ConfigError, match="data.sequence='columns' is invalid"):
        ImageDataSettings(sequence="columns")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ("model=resnet", "model.depth=8", "model.width=2"),
        ("model=rnn", "model.cell=rnn", "model.hidden=6", "model.leaky=0.5"),
        ("model=rnn", "model.cell=lstm", "model.hidden=6", "model.layers=2"),
        ("model=rnn", "model.cell=gru", "model.hidden=6", "data.sequence=pixels"),
        ("model=mlp", "data=toy", "model.width=8", "model.depth=3", "model.residual=true", "model.activation=sigmoid"),
    ],
)
def test_gradcheck_passes_for_the_new_models(overrides):
    results = gradcheck(*overrides, samples=4)
    assert all(r.passed for r in results), [(r.name, r.max_rel) for r in results if not r.passed]
    assert sum(r.checked - r.kinks for r in results) > 0


def test_summary_counts_a_cells_work_at_every_step():
    from dlcli.models import build_model
    from dlcli.settings import load_settings

    settings = load_settings(compose_cfg("summary", "model=rnn", "model.cell=lstm", "model.hidden=16"))
    rows = layer_table(build_model(settings.model, (28, 28), 10), (28, 28))
    cell = next(r for r in rows if r.kind == "LSTMCell")
    assert cell.macs == 28 * 4 * 16 * (28 + 16) and cell.params == 4 * 16 * (28 + 16) + 2 * 4 * 16


@pytest.mark.slow
def test_gradient_through_time_is_recorded_for_every_step(dlcli, tmp_path, mnist_root):
    proc = dlcli(
        "train",
        "model=rnn",
        "model.hidden=16",
        f"data.root={mnist_root}",
        "data.subset=300",
        "trainer.epochs=2",
        "trainer.diagnostics=true",
        "trainer.progress=false",
        "hydra.run.dir=run",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "time_gradients.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(e, t) for e in (1, 2) for t in range(1, 29)]
    assert all(r["grad_norm"] >= 0 for r in rows) and rows[27]["grad_norm"] > 0
    assert (tmp_path / "run" / "gradient_through_time.png").stat().st_size > 10_000


def test_the_experiments_compose_their_jobs():
    from hydra import compose, initialize_config_module

    with initialize_config_module("dlcli.configs", version_base="1.3"):
        long = compose("train", overrides=["experiment=long_sequences"], return_hydra_config=True)
        vanishing = compose("train", overrides=["experiment=vanishing_gradients"], return_hydra_config=True)
    assert dict(long.hydra.sweeper.params) == {
        "data.sequence": "rows,pixels",
        "model.cell": "rnn,lstm",
        "trainer.grad_clip": "null,1.0",
    }
    assert long.model._target_ == "dlcli.models.Recurrent" and long.trainer.diagnostics
    assert dict(vanishing.hydra.sweeper.params) == {"+experiment/vanishing": "sigmoid,relu,sigmoid_shortcuts"}
    with initialize_config_module("dlcli.configs", version_base="1.3"):
        job = compose("train", overrides=["experiment=vanishing_gradients", "+experiment/vanishing=sigmoid_shortcuts"])
    assert (job.model.activation, job.model.residual, job.model.depth) == ("sigmoid", True, 10)
