"""What every dlcli command shares: error reporting, device choice, thread settings, versions."""

import os
import platform
import sys
from typing import Any, Callable

from dlcli.errors import ConfigError, DlcliError


def run_guarded(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a Hydra task; a user error becomes one line on stderr and a non-zero exit.

    Set DLCLI_DEBUG=1 to see the traceback instead.
    """
    try:
        return task(cfg)
    except DlcliError as exc:
        if os.environ.get("DLCLI_DEBUG"):
            raise
        print(f"dlcli: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("dlcli: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name} is invalid: no CUDA GPU is visible here; "
                              "use trainer.device=cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name} is invalid: only {torch.cuda.device_count()} GPU(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    return torch.device(name)


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def versions() -> dict:
    import torch

    from dlcli import __version__

    return {"dlcli": __version__, "torch": torch.__version__, "python": platform.python_version()}
