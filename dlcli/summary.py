"""`dlcli summary`: the configured model as a table — output shape, parameters, MACs per sample."""

from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from dlcli.app import run_guarded
from dlcli.settings import load_settings, short_name


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="summary")
def main(cfg: DictConfig) -> None:
    run_guarded(show_summary, cfg)


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int  # multiply-accumulates for one sample


def layer_table(model, input_shape: tuple[int, ...]) -> list[LayerRow]:
    """One row per leaf module, in the order the forward pass runs them, from one sample."""
    import torch
    from torch import nn

    rows: list[LayerRow] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module, inputs, output):
        shape = tuple(output.shape[1:])
        params = sum(p.numel() for p in module.parameters(recurse=False))
        if isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = output[0].numel() * (module.in_channels // module.groups) * kh * kw
        else:
            macs = 0
        rows.append(LayerRow(names[module], type(module).__name__, shape, params, macs))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return rows


def show_summary(cfg: DictConfig) -> list[LayerRow]:
    from rich.console import Console
    from rich.table import Table

    from dlcli.data import data_shape
    from dlcli.models import build_model, count_parameters

    settings = load_settings(cfg)
    shape, classes = data_shape(settings.data)
    model = build_model(settings.model, shape, classes)
    rows = layer_table(model, shape)
    total_params, total_macs = count_parameters(model), sum(r.macs for r in rows)
    table = Table(title=f"{short_name(settings.model)} for {short_name(settings.data)}: input {'x'.join(map(str, shape))}, "
                        f"{classes} classes")
    for column in ("layer", "type", "output shape", "parameters", "MACs / sample"):
        table.add_column(column, justify="right" if column in ("parameters", "MACs / sample") else "left")
    for r in rows:
        table.add_row(r.name, r.kind, "x".join(map(str, r.output_shape)), f"{r.params:,}" if r.params else "",
                      f"{r.macs:,}" if r.macs else "")
    table.add_section()
    table.add_row("total", "", "", f"{total_params:,}", f"{total_macs:,}")
    import sys

    Console(width=None if sys.stdout.isatty() else 120).print(table)
    return rows
