"""Configs compose for every group option, each default is written once, and each bad value is one line."""

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import dlcli.configs
from dlcli.errors import ConfigError
from dlcli.settings import (
    SCHEMAS,
    ImageDataSettings,
    LeNetSettings,
    MLPSettings,
    composition_error,
    load_settings,
    short_name,
)

GROUPS = {
    "model": ["mlp", "lenet", "alexnet"],
    "data": ["toy", "mnist", "fashion_mnist", "cifar10"],
    "loss": ["cross_entropy", "nll", "mse", "hinge"],
    "regularization": ["none", "l2", "l1", "elastic"],
    "optimizer": ["sgd", "adam", "adamw", "rmsprop", "adagrad"],
    "scheduler": ["step", "cosine", "onecycle", "plateau"],
}
CONFIGS = Path(dlcli.configs.__path__[0])


def compose_train(*overrides: str, config_dir: Path | None = None):
    """The composed train config; a value Hydra's typed schemas refuse becomes dlcli's ConfigError, as in the CLI."""
    try:
        if config_dir is None:
            with initialize_config_module("dlcli.configs", version_base="1.3"):
                return compose("train", overrides=list(overrides))
        from hydra import initialize_config_dir

        with initialize_config_dir(str(config_dir), version_base="1.3"):
            return compose("train", overrides=list(overrides))
    except Exception as exc:
        message = composition_error(exc)
        if message is None:
            raise
        raise ConfigError(message) from None


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes_and_validates(group, option):
    settings = load_settings(compose_train(f"{group}={option}"))
    assert short_name(getattr(settings, group)) in (option, "spirals")


def test_defaults():
    s = load_settings(compose_train())
    assert isinstance(s.model, MLPSettings) and s.data.name == "spirals" and s.trainer.device == "auto"
    assert s.scheduler._target_ == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert load_settings(compose_train("scheduler=none")).scheduler is None


def test_an_image_model_without_a_data_choice_trains_on_mnist():
    s = load_settings(compose_train("model=lenet"))
    assert isinstance(s.model, LeNetSettings) and s.data.name == "mnist"
    assert load_settings(compose_train("model=alexnet")).data.name == "mnist"
    assert load_settings(compose_train("model=lenet", "data=fashion_mnist")).data.name == "fashion_mnist"
    assert load_settings(compose_train("data=cifar10", "model=lenet")).data.name == "cifar10"


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_each_default_is_written_once_in_its_schema(group):
    """The YAML options only inherit their schema: a value written there too could disagree with it."""
    for option, schema in SCHEMAS[group].items():
        text = yaml.safe_load((CONFIGS / group / f"{option}.yaml").read_text())
        assert set(text) == {"defaults"}, f"{group}/{option}.yaml sets values of its own: {set(text) - {'defaults'}}"
        assert text["defaults"][0] == f"/schema/{group}/{option}@_here_"
        composed = OmegaConf.to_container(compose_train(f"{group}={option}")[group], resolve=True)
        assert composed == OmegaConf.to_container(OmegaConf.structured(schema), resolve=True)


def test_a_users_yaml_inherits_the_built_in_options_values(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "funnel.yaml").write_text("defaults: [mlp]\ndepth: 3\nwidth: [128,64,32]\n")
    s = load_settings(compose_train("model=funnel", config_dir=_with_packaged(tmp_path)))
    assert s.model.depth == 3 and s.model.width == [128, 64, 32]
    assert s.model.dropout == MLPSettings().dropout and s.model.activation == MLPSettings().activation


def _with_packaged(user_dir: Path) -> Path:
    """A config dir holding the packaged configs and the user's, as --config-dir would combine them."""
    import shutil

    combined = user_dir.parent / "combined"
    shutil.copytree(CONFIGS, combined, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    shutil.copytree(user_dir / "model", combined / "model", dirs_exist_ok=True)
    return combined


def test_data_root_defaults_to_the_environment_variable(monkeypatch):
    monkeypatch.setenv("DLCLI_DATA", "/somewhere/data")
    s = load_settings(compose_train("data=mnist"))
    assert isinstance(s.data, ImageDataSettings) and s.data.root == "/somewhere/data"


@pytest.mark.parametrize("extra", [[], ["optimizer=sgd", "optimizer._target_=torch.optim.ASGD"]])
def test_a_quoted_learning_rate_is_the_number(extra):
    # lr is typed Any (it may be auto), so OmegaConf leaves '1e-3' a string: the settings turn it into the float
    s = load_settings(compose_train(*extra, "optimizer.lr='1e-3'"))
    lr = s.optimizer.lr if not extra else s.optimizer.kwargs["lr"]
    assert lr == 1e-3 and isinstance(lr, float)


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
    (["data=mnist", "data.subset=3"], "data.subset=3"),
    (["model.batch_norm=maybe"], "model.batch_norm='maybe'"),
    (["trainer.precision=16"], "trainer.precision='16'"),
    (["trainer.accumulate=0"], "trainer.accumulate=0"),
    (
        ["trainer.batch_size=128", "trainer.accumulate=3"],
        "trainer.batch_size=128 is invalid: trainer.accumulate=3 micro-batches",
    ),
    (["trainer.ema.decay=1.0"], "trainer.ema.decay=1 is invalid: a number in (0, 1)"),
    (["trainer.swa.start=0"], "trainer.swa.start=0 is invalid"),
    (["trainer.swa.start=2"], "trainer.swa.lr=None is invalid: the learning rate SWA trains at"),
    (
        ["trainer.epochs=3", "trainer.swa.start=4", "trainer.swa.lr=0.01"],
        "trainer.swa.start=4 is invalid: an epoch of the run's trainer.epochs=3",
    ),
    (
        ["trainer.swa.start=2", "trainer.swa.lr=0.01", "trainer.ema.decay=0.99"],
        "trainer.swa.start=2 is invalid: one average at a time",
    ),
    (["data=mnist", "data.mixup=-1"], "data.mixup=-1 is invalid: a Beta alpha >= 0"),
    (["data=fashion_mnist", "data.policy=augmix"], "data.policy='augmix' is invalid: choose one of none, randaugment"),
    (["data=cifar10", "data.erasing=1.5"], "data.erasing=1.5 is invalid: a probability in [0, 1]"),
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


def test_a_target_without_a_schema_gets_its_keys_as_they_are():
    s = load_settings(compose_train("model=custom", "model._target_=my_nets.Net", "+model.hidden=64"))
    assert s.model._target_ == "my_nets.Net" and s.model.kwargs == {"hidden": 64}
    with pytest.raises(ConfigError, match="model._target_ is required"):
        load_settings(compose_train("model=custom"))
