"""`dlcli export`: a checkpoint's model as an ONNX or TorchScript file that runs without dlcli.

The file holds the training data's normalization (dlcli.inputs.Prepared), so it takes what a user
has: float pixels in [0, 1], N×C×H×W, or raw feature rows, N×F, with any N. After writing, the
file is loaded back (by onnxruntime, or torch.jit.load) and its outputs compared with the
checkpoint's on a batch.
"""

import logging
import math
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dlcli.commands.guard import run_guarded
from dlcli.errors import CheckFailed, ConfigError, first_line
from dlcli.files import write_atomic
from dlcli.layout import EXAMPLE
from dlcli.machine import optional_package, set_threads
from dlcli.settings import allow_list, existing_checkpoint, require

log = logging.getLogger("dlcli")

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}
NAMES = {"onnx": "an ONNX", "torchscript": "a TorchScript"}
TOLERANCE = 1e-3  # largest difference of logits accepted between the file and the checkpoint


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="export")
def main(cfg: DictConfig) -> dict:
    return run_guarded(export, cfg)


def export(cfg: DictConfig) -> dict:
    if OmegaConf.is_missing(cfg, "checkpoint") or not cfg.checkpoint:
        raise ConfigError(f"checkpoint is required: dlcli export checkpoint={EXAMPLE} format=onnx")
    require(cfg.format in SUFFIX, "format", cfg.format, "onnx or torchscript")
    path = existing_checkpoint(cfg.checkpoint, "checkpoint")
    out = Path(cfg.out).expanduser() if cfg.out else path.with_suffix(SUFFIX[cfg.format])
    other = next(f for f, suffix in SUFFIX.items() if f != cfg.format)
    require(
        out.suffix != SUFFIX[other],
        "out",
        str(out),
        f"a file name not ending in {SUFFIX[other]} for "
        f"format={cfg.format} (say {out.with_suffix(SUFFIX[cfg.format]).name}), or format={other}",
    )
    if out.exists() and not is_export(out, cfg.format):
        # only an earlier export of the same format is replaced; a checkpoint, notes, a folder never are
        raise ConfigError(
            f"out={out} exists and is not {NAMES[cfg.format]} file; choose another out=, or delete it first"
        )
    if cfg.format == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            optional_package(module, "onnx", "dlcli export format=onnx", "choose format=torchscript")

    import torch

    from dlcli.inputs import restore

    set_threads(0)
    restored = restore(path, allow_list(cfg.allow))
    model = restored.model
    write = to_onnx if cfg.format == "onnx" else to_torchscript
    check = sample_inputs(restored.record, 5, seed=1)  # another batch size than the one exported with
    with torch.inference_mode():
        wanted = model(check)
    # written beside `out` and checked there; only a file that passes replaces `out`
    trial = out.with_name(f".{out.name}.check")
    try:
        data = _tried(
            f"torch could not export this model to {cfg.format}", write, model, sample_inputs(restored.record, 8)
        )
        write_atomic(trial, lambda f: f.write(data), binary=True)
        got = _tried(
            f"the exported {cfg.format} file could not be run",
            run_onnx if cfg.format == "onnx" else run_torchscript,
            trial,
            check,
        )
        difference = float((got.float() - wanted).abs().max()) if got.shape == wanted.shape else math.inf
        if not difference <= TOLERANCE:
            raise CheckFailed(
                f"the exported model's outputs differ from the checkpoint's by up to {difference:.3g} "
                f"(> {TOLERANCE:g}) on a batch of {len(check)}; nothing was written"
            )
        trial.replace(out)
    finally:
        trial.unlink(missing_ok=True)
    log.info(
        f"wrote {out} ({cfg.format}, {out.stat().st_size / 1e6:.2f} MB): takes "
        f"{describe_input(restored.record)}; largest difference from the checkpoint's outputs on a batch of "
        f"{len(check)}: {difference:.2e}"
    )
    return {"out": str(out), "format": cfg.format, "max_difference": difference}


def _tried(what: str, step, *args):
    """Run one step of the export; its failure (the model does something the format cannot hold, such as
    Python control flow on values) becomes one line."""
    try:
        return step(*args)
    except Exception as exc:
        raise CheckFailed(
            f"{what} ({type(exc).__name__}: {first_line(exc)}); nothing was written; try the other format"
        ) from None


def is_export(path: Path, format: str) -> bool:
    """Whether `path` is a file of that format: an ONNX protobuf whose graph loads, or TorchScript's zip archive."""
    if not path.is_file():
        return False
    if format == "torchscript":
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("/constants.pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
    import onnx

    try:
        return len(onnx.load(str(path), load_external_data=False).graph.node) > 0
    except Exception:  # onnx raises protobuf's DecodeError and others on what is not ONNX
        return False


def sample_inputs(record: dict, n: int, seed: int = 0):
    """A batch of inputs of the model's kind: pixels in [0, 1], or features around their mean."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    shape = tuple(record["shape"])
    if record["kind"] == "images":
        return torch.rand((n, *shape), generator=generator, dtype=torch.float32)
    mean, std = torch.tensor(record["mean"]), torch.tensor(record["std"])
    return (mean + std * torch.randn((n, *shape), generator=generator, dtype=torch.float32)).float()


def describe_input(record: dict) -> str:
    if record["kind"] == "images":
        return f"float pixels in [0, 1] of shape N×{'×'.join(map(str, record['shape']))}"
    names = record.get("features")
    columns = f" (columns {', '.join(names)})" if names else ""
    return f"raw feature rows of shape N×{record['shape'][0]}{columns}"


def to_onnx(model, example) -> bytes:
    import io

    import torch

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "onnxscript", "onnx_ir"):
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals are not for the user
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    buffer = io.BytesIO()
    program.save(buffer)
    return buffer.getvalue()


def to_torchscript(model, example) -> bytes:
    import io

    import torch

    with warnings.catch_warnings():
        # torch marks TorchScript deprecated in favour of torch.export, yet torch.jit.load still reads it;
        # the issue asked for it, as what C++ (libtorch) and older deployments load
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def run_onnx(path: Path, x):
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def run_torchscript(path: Path, x):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return loaded(x)


class _quiet:
    """Raise the named loggers to ERROR for a block (the ONNX exporter reports each step it takes)."""

    def __init__(self, *names: str) -> None:
        self.loggers = [logging.getLogger(name) for name in names]

    def __enter__(self):
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels):
            logger.setLevel(level)
