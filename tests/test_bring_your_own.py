"""A user's own model class, images, table and optimizer train end to end from the CLI, and
`dlcli eval` reproduces each test accuracy; a checkpoint whose config builds anything else runs nothing."""

import json
import os

import pytest
import torch

from conftest import FAST_TOY, assert_one_line_error

MY_NETS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, input_shape, num_classes, hidden):
        super().__init__()
        assert isinstance(input_shape, tuple)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), hidden), nn.Tanh(),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.body(x)
"""
QUIET = ["trainer.progress=false", "hydra.run.dir=run"]
TOY = [k for k in FAST_TOY if not k.startswith("model.")]  # a user's model has keys of its own


def train_and_eval(dlcli, cwd, *args, allow=()):
    proc = dlcli("train", *args, *QUIET, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((cwd / "run" / "summary.json").read_text())
    extra = [f"allow=[{','.join(allow)}]"] if allow else []
    proc = dlcli("eval", "checkpoint=run/checkpoints/best.pt", "hydra.run.dir=evaluated", *extra, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((cwd / "evaluated" / "eval.json").read_text())
    assert report["acc"] == summary["test_acc"]
    return summary, report


@pytest.mark.slow
def test_a_model_class_in_the_users_own_file(dlcli, tmp_path):
    (tmp_path / "my_nets.py").write_text(MY_NETS)
    summary, report = train_and_eval(
        dlcli,
        tmp_path,
        *TOY,
        "data.name=moons",
        "trainer.batch_size=16",
        "model=custom",
        "model._target_=my_nets.Net",
        "+model.hidden=32",
        allow=["my_nets"],
    )
    assert summary["test_acc"] > 0.75 and report["model"] == "Net"
    state = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert state["config"]["model"] == {"_target_": "my_nets.Net", "hidden": 32}  # what eval rebuilds
    # without the user's word, a checkpoint may not import their module
    proc = dlcli("eval", "checkpoint=run/checkpoints/best.pt", cwd=tmp_path)
    assert_one_line_error(proc, "was refused", "model._target_='my_nets.Net'", "allow=[my_nets]")


@pytest.mark.slow
def test_a_model_class_that_does_not_fit_is_one_line(dlcli, tmp_path):
    (tmp_path / "my_nets.py").write_text(MY_NETS)
    proc = dlcli("train", *TOY, "model=custom", "model._target_=my_nets.Net", cwd=tmp_path)
    assert_one_line_error(proc, "model._target_=my_nets.Net rejected its arguments", "hidden")
    proc = dlcli("train", *TOY, "model=custom", "model._target_=my_nets.Missing", cwd=tmp_path)
    assert_one_line_error(proc, "model._target_=my_nets.Missing cannot be imported")
    proc = dlcli("train", *TOY, "model=custom", "model._target_=torch.tanh", cwd=tmp_path)
    assert_one_line_error(proc, "is not a torch.nn.Module class")
    assert not (tmp_path / "outputs").exists()


def write_images(root, sizes_and_modes):
    """Two classes a small net can tell apart: bright squares on dark, and dark on bright."""
    from PIL import Image

    for cls, (fg, bg) in {"bright": (230, 20), "dark": (20, 230)}.items():
        for split, count in (("train", 24), ("test", 8)):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                size, mode = sizes_and_modes[i % len(sizes_and_modes)]
                image = Image.new("L", (size, size), bg)
                image.paste(fg, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
                image.convert(mode).save(folder / f"{i}.{'jpg' if mode == 'RGB' and i % 2 else 'png'}")


@pytest.mark.slow
def test_an_image_folder_of_mixed_sizes_and_modes(dlcli, tmp_path):
    write_images(tmp_path / "pictures", [(20, "L"), (32, "RGB"), (24, "RGBA"), (28, "P")])
    summary, report = train_and_eval(
        dlcli,
        tmp_path,
        "data=image_folder",
        "data.root=pictures",
        "data.image_size=16",
        "model=lenet",
        "trainer.epochs=8",
        "trainer.batch_size=8",
        "optimizer.lr=0.01",
    )
    assert report["classes"] == ["bright", "dark"] and report["n"] == 16
    assert summary["test_acc"] >= 0.9


@pytest.mark.slow
def test_a_csv_table_with_string_labels(dlcli, tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g)
    labels = ["cat" if a + 2 * b > 0 else "dog" for a, b, _ in x.tolist()]
    rows = ["f1,f2,f3,animal"] + [f"{a:.4f},{b:.4f},{c:.4f},{lab}" for (a, b, c), lab in zip(x.tolist(), labels)]
    (tmp_path / "animals.csv").write_text("\n".join(rows) + "\n")
    summary, report = train_and_eval(
        dlcli,
        tmp_path,
        "data=csv",
        "data.path=animals.csv",
        "data.label=animal",
        "trainer.epochs=10",
        "trainer.batch_size=16",
        "optimizer.lr=0.02",
        "model.width=16",
    )
    assert report["classes"] == ["cat", "dog"] and summary["test_acc"] >= 0.9


@pytest.mark.slow
def test_any_torch_optimizer_and_its_state_in_the_checkpoint(dlcli, tmp_path):
    proc = dlcli("train", *FAST_TOY, "optimizer._target_=torch.optim.NAdam", *QUIET)
    assert proc.returncode == 0, proc.stderr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    saved = state["optimizer"]
    assert saved["target"] == "torch.optim.NAdam" and "momentum_decay" in saved["state"]["param_groups"][0]
    assert state["scheduler"]["target"] == "torch.optim.lr_scheduler.CosineAnnealingLR"


CRAFTED = [
    ("model", {"_target_": "os.system", "command": "touch {marker}"}, "which is not a model dlcli rebuilds"),
    ("model", {"_target_": "subprocess.run", "args": ["touch", "{marker}"]}, "which is not a model"),
    ("model", {"_target_": "builtins.exec", "source": "open('{marker}', 'w')"}, "which is not a model"),
    (
        "model",
        {"_target_": "dlcli.models.MLP", "depth": {"_target_": "os.system", "command": "touch {marker}"}},
        "model.depth._target_='os.system' nested in model",
    ),
    (
        "model",
        {"_target_": "dlcli.models.MLP", "width": [{"_target_": "os.system", "command": "touch {marker}"}]},
        "model.width.0._target_='os.system' nested in model",
    ),
    ("data", {"_target_": "posix.system", "command": "touch {marker}"}, "which is not a data loader"),
    # allowed names on the way to something else: what they lead to must be allowed too
    ("data", {"_target_": "dlcli.commands.guard.os.system", "command": "touch {marker}"}, "which is not a data loader"),
    ("loss", {"_target_": "torch.nn.functional.torch.load", "f": "{marker}"}, "defined in torch.serialization"),
    ("loss", {"_target_": "torch.load", "f": "{marker}"}, "which is not a loss"),
    ("optimizer", {"_target_": "torch.hub.load", "repo_or_dir": "x", "model": "y"}, "which is not an optimizer"),
    ("model", {"_target_": "dlcli.models.MLP", "depth": "${oc.env:HOME}"}, "holds an interpolation"),
]


@pytest.mark.slow
@pytest.mark.parametrize("group,section,needle", CRAFTED, ids=[s["_target_"] for _, s, _ in CRAFTED])
def test_a_checkpoint_whose_config_builds_anything_else_runs_nothing(
    dlcli, tmp_path, toy_checkpoint, group, section, needle
):
    marker = tmp_path / "pwned"
    state = torch.load(toy_checkpoint, weights_only=True)
    state["config"][group] = json.loads(json.dumps(section).replace("{marker}", str(marker)))
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    proc = dlcli("eval", f"checkpoint={crafted}")
    assert_one_line_error(proc, "was refused", needle)
    assert not marker.exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_loader_in_the_folder_dlcli_runs_from_is_found_by_the_dlcli_script(tmp_path, cache_dir):
    """`python -m` puts the working folder on sys.path; the `dlcli` script does not, so dlcli does."""
    import shutil
    import subprocess

    (tmp_path / "my_points.py").write_text(
        "import torch\nfrom dlcli.data import Loaded\n\n\ndef load(seed=0):\n"
        "    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(seed))\n    y = (x[:, 0] > 0).long()\n"
        "    return Loaded(x, y, x[:50], y[:50], ('a', 'b'), [0.0, 0.0], [1.0, 1.0])\n"
    )
    script = shutil.which("dlcli")
    assert script, "the dlcli script is installed with the package"
    proc = subprocess.run(
        [
            script,
            "train",
            "data=custom",
            "data._target_=my_points.load",
            "trainer.epochs=1",
            "trainer.progress=false",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
        env={**os.environ, "DLCLI_CACHE": str(cache_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
