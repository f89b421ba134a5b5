"""The checkpoint names of a run folder, which many modules and messages name: <run>/checkpoints/
holds last.pt (saved at every epoch's end, and every trainer.checkpoint_every_steps) and best.pt
(the epoch trainer.monitor liked best). Imports nothing, so the lightest module may use them."""

from pathlib import Path

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
# the path a message shows as an example of a checkpoint to pass
EXAMPLE = f"outputs/<run>/{CHECKPOINTS}/{BEST}"


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def last_checkpoint(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / LAST
