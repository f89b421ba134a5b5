"""Configs compose for every group option, and each bad value is one line naming the key."""

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from dlcli.errors import ConfigError
from dlcli.settings import ImageDataSettings, MLPSettings, load_settings

GROUPS = {
    "model": ["mlp", "lenet", "alexnet"],
    "data": ["toy", "mnist", "fashion_mnist", "cifar10"],
    "loss": ["cross_entropy", "nll", "mse", "hinge"],
    "regularization": ["none", "l2", "l1", "elastic"],
    "optimizer": ["sgd", "adam", "adamw", "rmsprop", "adagrad"],
    "scheduler": ["none", "step", "cosine", "onecycle", "plateau"],
}


def compose_train(*overrides: str):
    with initialize_config_module("dlcli.configs", version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes_and_validates(group, option):
    extra = ["data=mnist"] if group == "model" and option != "mlp" else []
    settings = load_settings(compose_train(f"{group}={option}", *extra))
    assert getattr(settings, group).name in (option, "spirals")


def test_defaults():
    s = load_settings(compose_train())
    assert isinstance(s.model, MLPSettings) and s.data.name == "spirals" and s.trainer.device == "auto"


def test_data_root_defaults_to_the_environment_variable(monkeypatch):
    monkeypatch.setenv("DLCLI_DATA", "/somewhere/data")
    s = load_settings(compose_train("data=mnist"))
    assert isinstance(s.data, ImageDataSettings) and s.data.root == "/somewhere/data"


BAD = [
    (["optimizer.lr=0"], "optimizer.lr=0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1"),
    (["optimizer.lr=fast"], "optimizer.lr='fast'"),
    (["model.depth=-1"], "model.depth=-1"),
    (["model.depth=2.5"], "model.depth=2.5"),
    (["model.activation=swish"], "model.activation='swish'"),
    (["model.depth=3", "model.width=[64,32]"], "model.width=[64, 32]"),
    (["model.width=0"], "model.width=0"),
    (["model.dropout=1.5"], "model.dropout=1.5"),
    (["model.init=zeros"], "model.init='zeros'"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.epochs=0"], "trainer.epochs=0"),
    (["trainer.device=tpu"], "trainer.device='tpu'"),
    (["trainer.val_fraction=1.0"], "trainer.val_fraction=1 "),
    (["trainer.monitor=train_loss"], "trainer.monitor='train_loss'"),
    (["regularization=l2", "regularization.strength=-1e-4"], "regularization.strength=-0.0001 "),
    (["regularization=elastic", "regularization.l1_ratio=2"], "regularization.l1_ratio=2"),
    (["optimizer=adam", "optimizer.betas=[0.9]"], "optimizer.betas=[0.9]"),
    (["optimizer=sgd", "optimizer.momentum=1.0"], "optimizer.momentum=1 "),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0"),
    (["data.name=swirl"], "data.name='swirl'"),
    (["data.classes=4", "data.name=moons"], "data.classes=4"),
    (["model=lenet"], "model='lenet'"),
    (["data=mnist", "data.subset=3"], "data.subset=3"),
    (["model.batch_norm=maybe"], "model.batch_norm='maybe'"),
    (["trainer.precision=16"], "trainer.precision='16'"),
]


@pytest.mark.parametrize("overrides,needle", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_name_the_key_and_what_is_allowed(overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(compose_train(*overrides))
    message = str(info.value)
    assert message.startswith(needle) and "is invalid:" in message and "\n" not in message


def test_an_unknown_key_in_a_users_config_is_refused():
    cfg = OmegaConf.to_container(compose_train(), resolve=True)
    cfg["model"] = {**cfg["model"], "heads": 4}
    with pytest.raises(ConfigError, match=r"model.heads=4 is invalid: not a key of this model option"):
        load_settings(cfg)
