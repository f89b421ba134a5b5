"""Checkpoints whose config was crafted to run code: each group builds only what it is for, a
`_target_` anywhere else needs its module in allow=, and dlcli eval, predict, export and a resume
from one create, change and delete nothing of the author's choosing.

The large matrix calls the rebuild that predict and export use (dlcli.inputs.restore, which checks
the config as eval does) in-process; real CLI runs cover each command for the issue's payloads."""

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import FAST_TOY, assert_one_line_error
from dlcli.errors import ConfigError
from dlcli.inputs import restore
from dlcli.settings import BY_TARGET, IMAGE_SCHEMAS
from dlcli.targets import BUILDABLE, check_targets


@dataclass
class Aim:
    marker: Path  # a file a payload would create
    folder: Path  # someone's data a payload would delete
    unchanged: Callable[[], None]


@pytest.fixture
def aim(tmp_path, marker, foreign) -> Aim:
    folder = tmp_path / "someones_data"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "holiday.txt").write_text("keep me")
    return Aim(marker(tmp_path / "pwned"), folder, foreign(folder))


@pytest.fixture(scope="module")
def toy_state(toy_checkpoint) -> dict:
    return torch.load(toy_checkpoint, weights_only=True)


def craft(toy_state: dict, where: Path, change: Callable[[dict], None]) -> Path:
    """The toy checkpoint with its config changed by `change`, saved at `where`."""
    state = copy.deepcopy(toy_state)
    change(state["config"])
    torch.save(state, where)
    return where


def refused(path: Path, allow=()) -> str:
    with pytest.raises(ConfigError) as caught:
        restore(path, list(allow))
    line = str(caught.value)
    assert "\n" not in line
    return line


PAYLOADS = {
    "write_json": lambda aim: {"_target_": "dlcli.files.write_json", "path": str(aim.marker), "data": {"by": "x"}},
    "remove_run_dir": lambda aim: {"_target_": "dlcli.commands.guard._remove_run_dir", "run_dir": str(aim.folder)},
    "os.system": lambda aim: {"_target_": "os.system", "command": f"touch {aim.marker}"},
    "subprocess.run": lambda aim: {"_target_": "subprocess.run", "args": ["touch", str(aim.marker)]},
}


def _set(group: str, make: Callable[[dict, dict], dict]) -> Callable[[dict, dict], None]:
    return lambda config, payload: config.__setitem__(group, make(config[group], payload))


# where a payload sits -> (how it gets there, the key the refusal names)
PLACES = {
    "model": (_set("model", lambda old, p: p), "model._target_="),
    "model.key": (
        _set("model", lambda old, p: {"_target_": "torch.nn.Identity", "payload": p}),
        "model.payload._target_=",
    ),
    "model.mlp_key": (_set("model", lambda old, p: {**old, "depth": p}), "model.depth._target_="),
    "model.list": (
        _set("model", lambda old, p: {"_target_": "torch.nn.Identity", "layers": [1, [p]]}),
        "model.layers.1.0._target_=",
    ),
    "model._args_": (
        _set("model", lambda old, p: {"_target_": "torch.nn.Identity", "_args_": [p]}),
        "model._args_.0._target_=",
    ),
    "model.deep": (
        _set("model", lambda old, p: {**old, "init": {"a": [{"b": {"c": p}}]}}),
        "model.init.a.0.b.c._target_=",
    ),
    "model._target_": (_set("model", lambda old, p: {**old, "_target_": p}), "model._target_="),
    "loss": (_set("loss", lambda old, p: p), "loss._target_="),
    "loss.key": (
        _set("loss", lambda old, p: {"_target_": "torch.nn.CrossEntropyLoss", "weight": p}),
        "loss.weight._target_=",
    ),
    "data": (_set("data", lambda old, p: p), "data._target_="),
    "data.key": (_set("data", lambda old, p: {**old, "noise": p}), "data.noise._target_="),
    "optimizer": (_set("optimizer", lambda old, p: p), "optimizer._target_="),
    "optimizer.key": (
        _set("optimizer", lambda old, p: {"_target_": "torch.optim.NAdam", "lr": [p]}),
        "optimizer.lr.0._target_=",
    ),
    "scheduler": (_set("scheduler", lambda old, p: p), "scheduler._target_="),
    "scheduler.key": (_set("scheduler", lambda old, p: {**old, "eta_min": p}), "scheduler.eta_min._target_="),
    "regularization": (_set("regularization", lambda old, p: {**old, **p}), "regularization._target_="),
    "trainer": (_set("trainer", lambda old, p: {**old, "early_stopping": p}), "trainer.early_stopping._target_="),
    "root": (lambda config, p: config.update(p), "at the top of the config"),
    "root.key": (lambda config, p: config.__setitem__("notes", [p]), "notes.0._target_="),
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_payload_anywhere_in_the_config_is_refused_and_runs_nothing(toy_state, tmp_path, aim, payload, place):
    put, key = PLACES[place]
    path = craft(toy_state, tmp_path / "crafted.pt", lambda config: put(config, PAYLOADS[payload](aim)))
    line = refused(path)
    assert line.startswith(f"checkpoint {path} was refused: ") and key in line, line
    assert "allow=[" in line or "not the dotted path" in line
    assert not aim.marker.exists()
    aim.unchanged()


# each group builds only what it is for: (group, its _target_, what the refusal says)
WRONG_KIND = [
    ("model", "dlcli.files.write_json", "is not a model dlcli rebuilds: a model is one of dlcli's (dlcli.models.MLP"),
    ("model", "dlcli.models.Dense", "is not a model dlcli rebuilds"),  # a layer of dlcli's, no model option
    ("model", "dlcli.inputs.Prepared", "is not a model dlcli rebuilds"),
    ("model", "torch.nn.init.normal_", "is a function, not a torch.nn.Module class"),
    ("model", "torch.nn.functional.torch.load", "defined in torch.serialization, outside torch.nn"),
    ("model", "torchvision.models.resnet18", "is not a model dlcli rebuilds"),
    ("loss", "torch.nn.Parameter", "is the class Parameter, not a torch.nn.Module class"),
    ("loss", "torch.nn.utils.rnn.PackedSequence", "is the class PackedSequence, not a torch.nn.Module class"),
    ("loss", "torch.nn.functional.cross_entropy", "is a function, not a torch.nn.Module class"),
    ("loss", "dlcli.models.MLP", "is not a loss dlcli rebuilds"),
    ("optimizer", "torch.optim.swa_utils.AveragedModel", "is the class AveragedModel, not a torch.optim.Optimizer"),
    ("optimizer", "torch.nn.Linear", "is not an optimizer dlcli rebuilds"),
    ("optimizer", "torch.optim.lr_scheduler.StepLR", "not a torch.optim.Optimizer class"),
    ("scheduler", "torch.optim.Adam", "is the class Adam, not a torch.optim.lr_scheduler class"),
    ("scheduler", "torch.nn.Linear", "is not a schedule dlcli rebuilds"),
    ("data", "dlcli.files.write_json", "is not a data loader dlcli rebuilds: a data loader is one of dlcli's"),
    ("data", "dlcli.data.load_data", "is not a data loader dlcli rebuilds"),
    ("data", "torch.load", "is not a data loader dlcli rebuilds"),
    ("data", "torch.nn.Linear", "is not a data loader dlcli rebuilds"),
    ("model", ["dlcli.models.MLP"], "which is not the dotted path of a class or function"),
    ("optimizer", 3, "which is not the dotted path of a class or function"),
]


@pytest.mark.parametrize("group,target,needle", WRONG_KIND, ids=[f"{g}={t}" for g, t, _ in WRONG_KIND])
def test_each_group_builds_only_what_it_is_for(toy_state, tmp_path, group, target, needle):
    path = craft(toy_state, tmp_path / "crafted.pt", lambda config: config.__setitem__(group, {"_target_": target}))
    line = refused(path)
    assert f"was refused: its config builds {group}._target_={target!r}" in line and needle in line, line


def test_positional_arguments_for_a_group_are_refused(toy_state, tmp_path):
    path = craft(toy_state, tmp_path / "crafted.pt", lambda config: config["loss"].update(_args_=["mean"]))
    assert "passes loss._args_" in refused(path)


def test_the_checks_own_list_builds_every_built_in_option():
    """BUILDABLE names dlcli's options again, outside their schemas: it must not fall behind them."""
    for group in ("model", "loss", "data"):
        schemas = {*BY_TARGET[group], *(cls._target_ for cls in IMAGE_SCHEMAS.values() if group == "data")}
        assert schemas == set(BUILDABLE[group]), group
        for target in schemas:
            check_targets({group: {"_target_": target}}, [], "checkpoint x")
    for group in ("optimizer", "scheduler"):
        for target in BY_TARGET[group]:
            check_targets({group: {"_target_": target}}, [], "checkpoint x")


# torch classes of each group's kind, as a user may have trained with them
TORCH_KINDS = [
    ("loss", {"_target_": "torch.nn.CrossEntropyLoss", "label_smoothing": 0.1}),
    ("loss", {"_target_": "torch.nn.MultiMarginLoss"}),
    ("optimizer", {"_target_": "torch.optim.NAdam", "lr": 0.01}),
    ("scheduler", {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "patience": 1}),
    ("scheduler", {"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.9}),
    ("scheduler", {"_target_": None}),
]


@pytest.mark.parametrize("group,section", TORCH_KINDS, ids=[f"{g}={s['_target_']}" for g, s in TORCH_KINDS])
def test_torch_classes_of_the_groups_kind_still_rebuild(toy_state, tmp_path, group, section):
    path = craft(toy_state, tmp_path / "legit.pt", lambda config: config.__setitem__(group, section))
    restored = restore(path, [])
    assert restored.model(torch.zeros(4, 2)).shape == (4, 3)


MY_MODULE = """
import os

import torch
from torch import nn

from dlcli.models import MLP
from dlcli.data.toy import load_toy

MARKERS = {markers!r}


def _touch(name):
    open(os.path.join(MARKERS, name), "w").close()


class Tag:
    def __init__(self, name):
        self.name = name


class Net(MLP):
    def __init__(self, *, tag=None, **kwargs):
        super().__init__(**kwargs)
        self.tag = tag


class Loss(nn.Module):
    def __init__(self):
        super().__init__()
        _touch("built_loss")

    def forward(self, z, y):
        return nn.functional.cross_entropy(z, y)


class Opt(torch.optim.AdamW):
    def __init__(self, *args, **kwargs):
        _touch("built_optimizer")
        super().__init__(*args, **kwargs)


class Schedule(torch.optim.lr_scheduler.CosineAnnealingLR):
    def __init__(self, *args, **kwargs):
        _touch("built_scheduler")
        super().__init__(*args, **kwargs)


def load(**kwargs):
    _touch("loaded_data")
    return load_toy(**kwargs)


def helper(**kwargs):
    _touch("called_helper")
"""
BUILT = ("built_loss", "built_optimizer", "built_scheduler", "loaded_data", "called_helper")


@pytest.fixture
def my_module(tmp_path, monkeypatch, marker) -> str:
    """A module of the user's own, in the folder dlcli runs from, whose classes leave a marker when built."""
    name = f"my_nets_{tmp_path.name.replace('-', '_')}"  # a fresh module for each test
    (tmp_path / f"{name}.py").write_text(MY_MODULE.format(markers=str(tmp_path)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    for built in BUILT:
        marker(tmp_path / built)
    return name


def test_predict_and_export_build_the_model_alone_and_nested_objects_of_allowed_modules(toy_state, tmp_path, my_module):
    def mine(config):
        config["model"] = {
            **config["model"],
            "_target_": f"{my_module}.Net",
            "tag": {"_target_": f"{my_module}.Tag", "name": "mine"},
        }
        config["loss"] = {"_target_": f"{my_module}.Loss"}
        config["optimizer"] = {**config["optimizer"], "_target_": f"{my_module}.Opt"}
        config["scheduler"] = {**config["scheduler"], "_target_": f"{my_module}.Schedule"}
        config["data"] = {**config["data"], "_target_": f"{my_module}.load"}

    path = craft(toy_state, tmp_path / "mine.pt", mine)
    assert f"allow=[{my_module}]" in refused(path)
    restored = restore(path, [my_module])
    assert restored.model.model.tag.name == "mine"  # built by Hydra, nested: its module is allowed
    assert not [name for name in BUILT if (tmp_path / name).exists()]  # the checkpoint holds the inputs record


ALLOWED_WRONG_KIND = [
    ("model", "helper", "is a function, not a torch.nn.Module class"),
    ("model", "Tag", "is the class Tag, not a torch.nn.Module class"),
    ("loss", "Opt", "is the class Opt, not a torch.nn.Module class"),
    ("optimizer", "Loss", "is the class Loss, not a torch.optim.Optimizer class"),
    ("scheduler", "Opt", "is the class Opt, not a torch.optim.lr_scheduler class"),
    ("model", "nn.functional.torch.load", "defined in torch.serialization"),
    ("data", "os.system", "defined in posix"),
    ("model.tag", "os.system", "defined in posix"),  # nested, through the allowed module
    ("model.tag", "nn.Linear", "defined in torch.nn.modules.linear"),  # nested: torch.nn is not allowed
]


@pytest.mark.parametrize("where,name,needle", ALLOWED_WRONG_KIND, ids=[f"{w}={n}" for w, n, _ in ALLOWED_WRONG_KIND])
def test_an_allowed_modules_targets_still_must_fit_their_group(toy_state, tmp_path, my_module, where, name, needle):
    group, _, key = where.partition(".")
    target = f"{my_module}.{name}"

    def put(config):
        if key:
            config[group][key] = {"_target_": target}
        else:
            config[group] = {**config[group], "_target_": target}

    line = refused(craft(toy_state, tmp_path / "crafted.pt", put), [my_module])
    assert f"its config builds {where}._target_={target!r}" in line and needle in line, line
    assert not [name for name in BUILT if (tmp_path / name).exists()]


# --- the real commands ---------------------------------------------------------------------------


def identity_with(payload: dict) -> Callable[[dict], None]:
    """The issue's example: a payload nested under a torch.nn class that the check let through."""
    return lambda config: config.__setitem__("model", {"_target_": "torch.nn.Identity", "payload": payload})


COMMANDS = {
    "eval": lambda path, tmp: ["eval", f"checkpoint={path}"],
    "predict": lambda path, tmp: ["predict", f"checkpoint={path}", f"inputs={tmp / 'points.npy'}"],
    "export": lambda path, tmp: ["export", f"checkpoint={path}", "format=torchscript", f"out={tmp / 'x.torchscript'}"],
}


# the issue's (eval and export wrote a file, predict deleted a folder), and eval with the other one
@pytest.mark.slow
@pytest.mark.parametrize(
    "command,payload",
    [("eval", "write_json"), ("export", "write_json"), ("predict", "remove_run_dir"), ("eval", "remove_run_dir")],
)
def test_the_issues_payloads_run_nothing_through_each_command(dlcli, toy_state, tmp_path, aim, command, payload):
    path = craft(toy_state, tmp_path / "crafted.pt", identity_with(PAYLOADS[payload](aim)))
    np.save(tmp_path / "points.npy", np.zeros((3, 2), dtype=np.float32))
    proc = dlcli(*COMMANDS[command](path, tmp_path))
    assert_one_line_error(proc, f"dlcli: error: checkpoint {path} was refused", "model.payload._target_=", "allow=[")
    assert not aim.marker.exists() and not (tmp_path / "x.torchscript").exists()
    assert not (tmp_path / "outputs").exists()
    aim.unchanged()


@pytest.mark.slow
def test_a_payload_in_the_loss_runs_nothing_through_eval(dlcli, toy_state, tmp_path, aim):
    """Of the three commands, eval alone builds the loss (and the data: the in-process matrix has both)."""
    path = craft(
        toy_state,
        tmp_path / "crafted.pt",
        lambda config: config.__setitem__(
            "loss", {"_target_": "torch.nn.CrossEntropyLoss", "weight": PAYLOADS["write_json"](aim)}
        ),
    )
    assert_one_line_error(dlcli("eval", f"checkpoint={path}"), "was refused", "builds loss.weight._target_=")
    assert not aim.marker.exists() and not (tmp_path / "outputs").exists()
    aim.unchanged()


@pytest.mark.slow
def test_eval_builds_neither_the_optimizer_nor_the_schedule(dlcli, toy_state, tmp_path, my_module):
    def mine(config):
        config["optimizer"] = {**config["optimizer"], "_target_": f"{my_module}.Opt"}
        config["scheduler"] = {**config["scheduler"], "_target_": f"{my_module}.Schedule"}

    path = craft(toy_state, tmp_path / "mine.pt", mine)
    proc = dlcli("eval", f"checkpoint={path}", f"allow=[{my_module}]", "hydra.run.dir=evaluated")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "evaluated" / "eval.json").read_text())["n"] > 0
    assert not [name for name in BUILT if (tmp_path / name).exists()]


@pytest.mark.slow
def test_a_resume_from_a_crafted_checkpoint_runs_nothing(dlcli, toy_state, tmp_path, aim):
    """Training builds from its command line: the checkpoint gives weights and state, never its config."""

    def everywhere(config):
        identity_with(PAYLOADS["write_json"](aim))(config)
        config["loss"]["weight"] = PAYLOADS["remove_run_dir"](aim)
        config["data"] = PAYLOADS["os.system"](aim)
        config["optimizer"]["betas"] = [PAYLOADS["subprocess.run"](aim), 0.999]
        config["scheduler"] = {"_target_": "dlcli.files.write_json", "path": str(aim.marker), "data": 1}

    (tmp_path / "src" / "checkpoints").mkdir(parents=True)
    crafted = tmp_path / "src" / "checkpoints" / "last.pt"
    craft(toy_state, crafted, everywhere)
    proc = dlcli("train", *FAST_TOY, f"trainer.resume={crafted}", "hydra.run.dir=run")  # into a new folder
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
    assert not aim.marker.exists()
    aim.unchanged()


def test_a_checkpoint_does_not_download_into_a_folder_of_its_choosing(dlcli, toy_state, tmp_path, foreign):
    folder = tmp_path / "someone_elses"
    folder.mkdir()
    unchanged = foreign(folder)

    def mnist_there(config):
        config["data"] = {
            "_target_": "dlcli.data.builtin.load_image_set",
            "name": "mnist",
            "root": str(folder),
            "download": True,
            "subset": None,
            "augment": False,
            "crop_padding": 0,
            "flip": False,
            "sequence": None,
        }

    crafted = craft(toy_state, tmp_path / "crafted.pt", mnist_there)
    proc = dlcli("eval", f"checkpoint={crafted}")
    assert_one_line_error(proc, "MNIST")
    unchanged()
