"""Checkpoints: everything needed to resume training or to evaluate without the config files.

They hold only tensors and plain Python data, so they load with `torch.load(weights_only=True)`,
which refuses anything that could run code when unpickled.
"""

import io
import pickle
import random
from pathlib import Path

import numpy as np
import torch

from dlcli import __version__
from dlcli.errors import CheckpointError, ConfigError, first_line
from dlcli.files import write_atomic
from dlcli.layout import CHECKPOINTS, EXAMPLE, LAST
from dlcli.settings import existing_checkpoint
from dlcli.targets import check_targets

FORMAT = 3  # bumped when the layout changes; a checkpoint of a newer format is refused
RESUMABLE = 3  # the oldest format whose optimizer state this dlcli can resume (2 held dlcli's own optimizers')
REQUIRED = ("format", "dlcli_version", "config", "model", "epoch")


def save_checkpoint(path: Path, state: dict) -> None:
    state = {"format": FORMAT, "dlcli_version": __version__, **state}
    buffer = io.BytesIO()  # serialize in memory: a failing disk then raises a plain OSError on write
    torch.save(state, buffer)
    write_atomic(path, lambda f: f.write(buffer.getbuffer()), binary=True)


def load_checkpoint(path: str | Path) -> dict:
    """Load and sanity-check a checkpoint, or raise a one-line CheckpointError."""
    path = existing_checkpoint(str(path), "checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes zip archives (since torch 1.6); a damaged one still starts so
        raise CheckpointError(
            f"checkpoint {path} is not a checkpoint (not a file torch.save wrote); pass a .pt file "
            f"that dlcli train wrote, e.g. {EXAMPLE}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()
        if any("weights_only" in line.lower() or "unsupported global" in line.lower() for line in reason):
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds Python objects that could run code "
                "when loaded, not only tensors and plain data; load only files written by "
                "dlcli"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a checkpoint ({reason[0] if reason else exc}); "
            f"use another file, e.g. {CHECKPOINTS}/{LAST} of the same run"
        ) from None
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a checkpoint ({type(exc).__name__}: "
            f"{first_line(exc)}); use another file, "
            f"e.g. {CHECKPOINTS}/{LAST} of the same run"
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise CheckpointError(f"{path} is not a dlcli checkpoint (it lacks {', '.join(REQUIRED)})")
    if not isinstance(state["format"], int) or state["format"] > FORMAT:
        raise CheckpointError(
            f"checkpoint {path} was written by dlcli {state.get('dlcli_version')} in format "
            f"{state['format']}, newer than this dlcli {__version__} reads ({FORMAT}); upgrade dlcli"
        )
    return state


# the data loaders' homes before dlcli.data became a package: checkpoints written then name them so
MOVED_TARGETS = {
    "dlcli.toy.load_toy": "dlcli.data.toy.load_toy",
    "dlcli.images.load_image_set": "dlcli.data.builtin.load_image_set",
    "dlcli.folders.load_image_folder": "dlcli.data.folders.load_image_folder",
    "dlcli.tabular.load_csv": "dlcli.data.tables.load_csv",
    "dlcli.tabular.load_arrays": "dlcli.data.tables.load_arrays",
}
# the penalties before regularization named what it builds: {name, strength, l1_ratio}
OLD_PENALTIES = {
    "none": ("dlcli.regularization.NoPenalty", ()),
    "l1": ("dlcli.regularization.L1", ("strength",)),
    "l2": ("dlcli.regularization.L2", ("strength",)),
    "elastic": ("dlcli.regularization.ElasticNet", ("strength", "l1_ratio")),
}


def _moved(config: dict) -> dict:
    """A config from before a move, in today's targets (exact names only, before the check)."""
    data, penalty = config.get("data"), config.get("regularization")
    if isinstance(data, dict) and data.get("_target_") in MOVED_TARGETS:
        config = {**config, "data": {**data, "_target_": MOVED_TARGETS[data["_target_"]]}}
    if isinstance(penalty, dict) and "_target_" not in penalty and penalty.get("name") in OLD_PENALTIES:
        target, keys = OLD_PENALTIES[penalty["name"]]
        config = {**config, "regularization": {"_target_": target, **{k: penalty[k] for k in keys if k in penalty}}}
    return config


def config_to_rebuild(state: dict, path: str | Path, allow: list[str]) -> dict:
    """A copy of the checkpoint's config, checked before anything in it is built (dlcli eval, predict,
    export): it must name its classes (format 3 on), and may build only what check_targets allows."""
    config = state["config"]
    if not isinstance(config, dict):
        raise ConfigError(f"checkpoint {path} holds no config to rebuild the model from")
    if state["format"] < 3:
        raise ConfigError(
            f"checkpoint {path} was written by dlcli {state.get('dlcli_version')} in format "
            f"{state['format']}, before configs named what they build (_target_); this dlcli cannot "
            "rebuild its model: train it again"
        )
    # where training was tracked matters to none of them, so the logger is neither checked nor built
    config = {key: value for key, value in config.items() if key != "logger"}
    config = _moved(config)
    check_targets(config, allow, f"checkpoint {path}")
    for group in ("data", "trainer"):
        if not isinstance(config.get(group), dict):
            raise ConfigError(
                f"checkpoint {path} holds no {group} section in its config; use a checkpoint that dlcli train wrote"
            )
    # a checkpoint's root is someone else's choice of folder: nothing is downloaded into it
    data = {**config["data"], **({"download": False} if "download" in config["data"] else {})}
    return {**config, "data": data, "trainer": {**config["trainer"], "resume": None}}


def check_resumable(state: dict, path: str | Path) -> None:
    if state["format"] < RESUMABLE:
        raise CheckpointError(
            f"checkpoint {path} was written by dlcli {state.get('dlcli_version')} in format "
            f"{state['format']}, whose optimizer state this dlcli {__version__} cannot resume; "
            "start a new run"
        )


def load_weights(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """Load model weights, turning a shape or key mismatch into one line."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise CheckpointError(f"checkpoint {path} does not fit this model ({detail})") from None


def rng_states(device: torch.device | None = None) -> dict:
    """Every random generator whose state decides what happens next: on CUDA, the training GPU's
    (all GPUs' would start a context on each, in every process of a multi-GPU run)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = device is not None and device.type == "cuda"
    return {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state(device)] if cuda else [],
    }


def restore_rng_states(states: dict, device: torch.device | None = None) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and device is not None and device.type == "cuda":
        if len(states["cuda"]) == 1:
            torch.cuda.set_rng_state(states["cuda"][0], device)
        else:  # checkpoints of earlier dlcli versions kept every visible GPU's
            torch.cuda.set_rng_state_all(states["cuda"])
