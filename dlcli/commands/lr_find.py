"""`dlcli lr-find`: the learning-rate range test on the configured model, data and optimizer."""

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dlcli.commands.guard import run_guarded
from dlcli.data.builtin import check_sources
from dlcli.machine import resolve_device, seed_all, set_threads
from dlcli.settings import ImageDataSettings, load_settings

log = logging.getLogger("dlcli")


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="lr-find")
def main(cfg: DictConfig) -> float:
    return run_guarded(find_lr, cfg)


def find_lr(cfg: DictConfig) -> float:
    settings = load_settings(cfg)
    if isinstance(settings.data, ImageDataSettings):
        check_sources(settings.data.name, settings.data.root, settings.data.download)  # before torch's import

    from dlcli.data import load_data
    from dlcli.losses import build_loss
    from dlcli.lr_find import find_and_record
    from dlcli.models import on_device

    t = settings.trainer
    set_threads(t.threads)
    device = resolve_device(t.device)
    seed_all(t.seed)  # as dlcli train seeds: the same weights as the run it is for
    data = load_data(settings.data, t.seed, t.val_fraction, device)
    model, data = on_device(settings.model, data, device, t.channels_last)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    found = find_and_record(settings, model, data, build_loss(settings.loss, data.train.y, data.num_classes), run_dir)
    log.info(
        f"suggested lr {found['suggested_lr']:.3g} after {found['steps']} steps ({found['stopped']}); "
        f"train with optimizer.lr={found['suggested_lr']:.3g}, or let dlcli train find it with optimizer.lr=auto; "
        f"wrote {run_dir / 'lr_find.json'} and {run_dir / 'lr_find.png'}"
    )
    return found["suggested_lr"]
