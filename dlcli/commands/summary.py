"""`dlcli summary`: the configured model as a table — output shape, parameters, MACs per sample."""

from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from dlcli.commands.guard import run_guarded
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
    """One row per leaf module, in the order the forward pass first runs them, from one sample; a
    module run several times (a recurrent cell, once per time step) adds up its MACs."""
    import torch
    from torch import nn

    rows: dict[nn.Module, LayerRow] = {}
    names = {module: name for name, module in model.named_modules()}
    gates = {nn.RNNCell: 1, nn.GRUCell: 3, nn.LSTMCell: 4}  # weight matrices per cell, each [hidden, in + hidden]

    def record(module, inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(module, nn.Linear):
            macs = module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif type(module) in gates:
            macs = gates[type(module)] * module.hidden_size * (module.input_size + module.hidden_size)
        else:
            macs = 0
        if module in rows:
            rows[module].macs += macs
        else:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows[module] = LayerRow(names[module], type(module).__name__, tuple(out.shape[1:]), params, macs)

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return list(rows.values())


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
    table = Table(
        title=f"{short_name(settings.model)} for {short_name(settings.data)}: input {'x'.join(map(str, shape))}, "
        f"{classes} classes"
    )
    for column in ("layer", "type", "output shape", "parameters", "MACs / sample"):
        table.add_column(column, justify="right" if column in ("parameters", "MACs / sample") else "left")
    for r in rows:
        table.add_row(
            r.name,
            r.kind,
            "x".join(map(str, r.output_shape)),
            f"{r.params:,}" if r.params else "",
            f"{r.macs:,}" if r.macs else "",
        )
    table.add_section()
    table.add_row("total", "", "", f"{total_params:,}", f"{total_macs:,}")
    import sys

    Console(width=None if sys.stdout.isatty() else 120).print(table)
    return rows
