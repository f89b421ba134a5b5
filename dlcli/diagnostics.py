"""Gradient flow per layer (trainer.diagnostics=true): what backprop delivers to each layer, each epoch.

At the end of every epoch one fixed training batch goes forward (eval mode, so no dropout and no
random numbers are used: training is the same with or without diagnostics) and backward. For each
weight layer it records the gradient norm, the mean |gradient|, the weight norm, the update-to-weight
ratio ||W_now - W_before|| / ||W_before|| over the epoch, and for the activation after the layer the
fraction of dead ReLUs (zero for every sample of the batch) or of saturated sigmoid/tanh outputs.
For a recurrent net it also records ‖∂L/∂h_t‖ at every time step t (time_gradients.jsonl): how much
of the gradient reaches each step back through time.
"""

import json
from pathlib import Path

import torch
from torch import nn

SATURATING = {nn.Sigmoid: lambda h: (h < 0.01) | (h > 0.99), nn.Tanh: lambda h: h.abs() > 0.99}


class GradientFlow:
    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, penalty, path: Path):
        self.model, self.x, self.y, self.loss_fn, self.penalty, self.path = model, x, y, loss_fn, penalty, path
        self.layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        self.before = {name: m.weight.detach().clone() for name, m in self.layers}
        self.rows: list[dict] = []
        self.time_rows: list[dict] = []  # recurrent nets: ‖∂L/∂h_t‖ per epoch and step
        self.time_path = path.with_name("time_gradients.jsonl")

    def record(self, epoch: int) -> list[dict]:
        activations: list[tuple[type, torch.Tensor]] = []

        def keep(module, inputs, output):
            activations.append((type(module), output.detach()))

        kinds = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.GELU)
        hooks = [m.register_forward_hook(keep) for m in self.model.modules() if isinstance(m, kinds)]
        was_training = self.model.training
        recurrent = hasattr(self.model, "record_states")
        self.model.eval()
        try:
            self.model.zero_grad(set_to_none=True)
            if recurrent:
                self.model.record_states = True
            objective = self.loss_fn(self.model(self.x), self.y)
            if self.penalty.active:
                objective = objective + self.penalty()
            objective.backward()
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
            if recurrent:
                self.model.record_states = False
        if recurrent:
            self._record_time(epoch)
        rows = []
        for i, (name, layer) in enumerate(self.layers):
            w, g = layer.weight.detach(), layer.weight.grad
            row = {
                "epoch": epoch,
                "layer": name,
                "depth": i + 1,
                "grad_norm": float(g.norm()),
                "grad_mean_abs": float(g.abs().mean()),
                "weight_norm": float(w.norm()),
                "update_ratio": float((w - self.before[name]).norm() / self.before[name].norm().clamp_min(1e-12)),
            }
            if i < len(activations):  # the activation that follows layer i (the output layer has none)
                kind, h = activations[i]
                if kind is nn.ReLU:
                    row["dead_fraction"] = float((h == 0).all(dim=0).float().mean())
                elif kind in SATURATING:
                    row["saturated_fraction"] = float(SATURATING[kind](h).float().mean())
            rows.append(row)
            self.before[name] = w.clone()
        self.model.zero_grad(set_to_none=True)
        self.rows += rows
        with open(self.path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        return rows

    def _record_time(self, epoch: int) -> None:
        states, self.model.states = self.model.states, []
        rows = [
            {"epoch": epoch, "step": t + 1, "grad_norm": float(h.grad.norm()) if h.grad is not None else 0.0}
            for t, h in enumerate(states)
        ]
        self.time_rows += rows
        with open(self.time_path, "a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))


def read_diagnostics(run_dir: Path) -> list[dict]:
    path = run_dir / "diagnostics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
