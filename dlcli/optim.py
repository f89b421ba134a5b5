"""Optimizers and learning-rate schedules, one per `optimizer=` / `scheduler=` choice.

They are written here instead of taken from torch.optim for two measured reasons:
- torch.optim imports torch._dynamo on its first call: about 1 s and 150 MB on a 2-core CPU,
  a third of a run's start-up and most of what separates it from the memory budget;
- every update below is tensor arithmetic only. The numbers that change from step to step
  (learning rate, bias corrections, cycled momentum) are computed on the host in `prepare`
  and written into 0-dim tensors on the parameters' device, which `update` reads. A CUDA graph
  can then record `update` once and replay it with new numbers every step (given gradient
  buffers that stay in place, i.e. zero_grad(set_to_none=False), and one eager step first).

The formulas are torch.optim's (tests/test_optim.py compares trajectories); the weight decay of
the optimizer, like the regularization penalty, applies to weights only (see build_optimizer).
"""

import logging
import math

import torch
from torch import nn

from dlcli.errors import CheckpointError
from dlcli.regularization import penalized_weights

log = logging.getLogger("dlcli")


class Optimizer:
    """The torch.optim surface the trainer uses: param_groups, step, zero_grad, state_dict."""

    state_names: tuple[str, ...] = ()  # per-parameter buffers, same shape as the parameter

    def __init__(self, groups: list[dict], **defaults):
        self.defaults = defaults
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        # updates taken so far, for every parameter alike (torch counts per parameter, skipping steps
        # where its gradient is None; in dlcli's models every parameter gets a gradient every step)
        self.steps = 0
        # buffers start at zero: the first update then equals torch's special first step exactly
        self.state = [[{k: torch.zeros_like(p, memory_format=torch.preserve_format) for k in self.state_names}
                       for p in g["params"]] for g in self.param_groups]
        self.scalars = [{} for _ in self.param_groups]  # per group: name -> 0-dim tensor on the device

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self) -> None:
        self.prepare()
        self.update()

    def prepare(self) -> None:
        """Host side of a step: count it and write its scalars into the device tensors `update` reads."""
        self.steps += 1
        for group, tensors in zip(self.param_groups, self.scalars):
            for name, value in self.step_scalars(group, self.steps).items():
                if name in tensors:
                    tensors[name].fill_(value)
                else:
                    tensors[name] = torch.tensor(value, dtype=torch.float32, device=group["params"][0].device)

    @torch.no_grad()
    def update(self) -> None:
        """Device side of a step: tensor operations only, nothing read back to the host."""
        for group, states, s in zip(self.param_groups, self.state, self.scalars):
            for p, state in zip(group["params"], states):
                if p.grad is not None:
                    self.update_one(p, p.grad, state, s, group)

    def step_scalars(self, group: dict, t: int) -> dict[str, float]:
        raise NotImplementedError

    def update_one(self, p, g, state: dict, s: dict, group: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {
            "name": type(self).__name__,
            "steps": self.steps,
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups],
            "state": self.state,  # not copied: a checkpoint serializes it at once
        }

    def load_state_dict(self, saved: dict) -> None:
        """Continue from `saved`: its buffers, step count and hyperparameters (the checkpoint's run wins)."""
        name = type(self).__name__
        if saved.get("name") != name:
            raise CheckpointError(f"the checkpoint's optimizer state is for {saved.get('name')}, not this run's "
                                  f"{name}; resume with the optimizer it was trained with")
        if _shapes(saved["state"]) != _shapes(self.state):
            raise CheckpointError(f"the checkpoint's {name} state does not fit this run (other parameter shapes, "
                                  "or momentum switched on or off); resume with the settings it was trained with")
        self.steps = saved["steps"]
        for group, hyper in zip(self.param_groups, saved["param_groups"]):
            group.update(hyper)
        for states, saved_states in zip(self.state, saved["state"]):
            for state, saved_state in zip(states, saved_states):
                for k, v in saved_state.items():
                    state[k].copy_(v)  # in place: a captured CUDA graph keeps pointing at these buffers


def _shapes(state: list[list[dict]]) -> list[list[dict]]:
    return [[{k: tuple(v.shape) for k, v in st.items()} for st in states] for states in state]


def _decayed(p, g, group: dict):
    """L2-style weight decay added to the gradient (its group's weight_decay is 0 for biases)."""
    return g.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else g


class SGD(Optimizer):
    """v <- mu v + g;  p <- p - lr (g + mu v) with Nesterov, else p - lr v;  plain SGD when mu = 0."""

    def __init__(self, groups, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.state_names = ("momentum_buffer",) if momentum > 0 else ()
        super().__init__(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    def step_scalars(self, group, t):
        return {"neg_lr": -group["lr"], "momentum": group["momentum"]}

    def update_one(self, p, g, state, s, group):
        g = _decayed(p, g, group)
        if "momentum_buffer" in state:
            buf = state["momentum_buffer"]
            buf.mul_(s["momentum"]).add_(g)
            g = torch.addcmul(g, buf, s["momentum"]) if group["nesterov"] else buf
        p.addcmul_(g, s["neg_lr"])


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;  p <- p - lr m_hat / (sqrt(v_hat) + eps).

    Adam adds weight_decay * p to the gradient; AdamW (decoupled=True) shrinks p by (1 - lr wd) instead.
    """

    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, groups, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        self.decoupled = decoupled
        super().__init__(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def step_scalars(self, group, t):
        lr, (beta1, beta2) = group["lr"], group["betas"]
        scalars = {"one_minus_beta1": 1 - beta1,
                   "neg_step_size": -lr / (1 - beta1 ** t),
                   "bias_correction2_sqrt": math.sqrt(1 - beta2 ** t)}
        if self.decoupled:
            scalars["decay"] = 1 - lr * group["weight_decay"]
        return scalars

    def update_one(self, p, g, state, s, group):
        beta2 = group["betas"][1]
        if not self.decoupled:
            g = _decayed(p, g, group)
        elif group["weight_decay"]:
            p.mul_(s["decay"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, s["one_minus_beta1"])
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / s["bias_correction2_sqrt"]).add_(group["eps"])
        p.addcdiv_(m * s["neg_step_size"], denom)


class AdamW(Adam):
    def __init__(self, groups, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(groups, lr, betas, eps, weight_decay, decoupled=True)


class RMSprop(Optimizer):
    """v <- a v + (1-a) g^2;  p <- p - lr g / (sqrt(v) + eps), through a momentum buffer when mu > 0."""

    def __init__(self, groups, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        self.state_names = ("square_avg", "momentum_buffer") if momentum > 0 else ("square_avg",)
        super().__init__(groups, lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)

    def step_scalars(self, group, t):
        return {"neg_lr": -group["lr"], "momentum": group["momentum"]}

    def update_one(self, p, g, state, s, group):
        g = _decayed(p, g, group)
        v = state["square_avg"]
        v.mul_(group["alpha"]).addcmul_(g, g, value=1 - group["alpha"])
        avg = v.sqrt().add_(group["eps"])
        if "momentum_buffer" in state:
            buf = state["momentum_buffer"]
            buf.mul_(s["momentum"]).addcdiv_(g, avg)
            p.addcmul_(buf, s["neg_lr"])
        else:
            p.addcdiv_(g * s["neg_lr"], avg)


class Adagrad(Optimizer):
    """G <- G + g^2;  p <- p - lr g / (sqrt(G) + eps)."""

    state_names = ("sum",)

    def __init__(self, groups, lr, eps=1e-10, weight_decay=0.0):
        super().__init__(groups, lr=lr, eps=eps, weight_decay=weight_decay)

    def step_scalars(self, group, t):
        return {"neg_lr": -group["lr"]}

    def update_one(self, p, g, state, s, group):
        g = _decayed(p, g, group)
        state["sum"].addcmul_(g, g, value=1)
        p.addcdiv_(g * s["neg_lr"], state["sum"].sqrt().add_(group["eps"]))


def build_optimizer(settings, model: nn.Module) -> Optimizer:
    """The optimizer's own weight decay applies to weights only, like the penalty."""
    decay = penalized_weights(model)
    decay_ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in decay_ids]
    groups = [{"params": decay, "weight_decay": settings.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    s = settings
    if s.name == "sgd":
        return SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov)
    if s.name == "adam":
        return Adam(groups, lr=s.lr, betas=s.betas, eps=s.eps)
    if s.name == "adamw":
        return AdamW(groups, lr=s.lr, betas=s.betas, eps=s.eps)
    if s.name == "rmsprop":
        return RMSprop(groups, lr=s.lr, alpha=s.alpha, eps=s.eps, momentum=s.momentum)
    return Adagrad(groups, lr=s.lr, eps=s.eps)


class Schedule:
    """Sets every group's lr (and, for one-cycle, its momentum) from the steps or epochs done so far.

    cosine, onecycle: after every batch; step, plateau: after every epoch; none: never.
    The formulas are those of torch.optim.lr_scheduler's CosineAnnealingLR, OneCycleLR, StepLR and
    ReduceLROnPlateau (mode min, relative threshold 1e-4, no reduction smaller than 1e-8) in closed form.
    """

    def __init__(self, settings, optimizer: Optimizer, total_steps: int):
        self.s, self.optimizer, self.total = settings, optimizer, max(1, total_steps)
        self.base_lr = [g["lr"] for g in optimizer.param_groups]
        self.per_step = settings.name in ("cosine", "onecycle")
        # one-cycle momentum: only for optimizers that have one (Adam's beta1, SGD/RMSprop momentum > 0)
        self.cycle_momentum = settings.name == "onecycle" and (
            "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0)
        # counted here, not taken from the optimizer: fp16's loss scaler skips optimizer steps, never these
        self.steps = self.epochs = 0
        self.best, self.bad_epochs = math.inf, 0  # plateau: best val loss so far, epochs without improving
        self.scales = [1.0 for _ in self.base_lr]  # plateau: product of each group's reductions
        self.apply()

    def after_step(self) -> None:
        if self.per_step:
            self.steps += 1
            self.apply()

    def after_epoch(self, val_loss: float) -> None:
        self.epochs += 1
        if self.s.name == "plateau":
            if val_loss < self.best * (1 - 1e-4):
                self.best, self.bad_epochs = val_loss, 0
            else:
                self.bad_epochs += 1
            if self.bad_epochs > self.s.patience:
                for i, base in enumerate(self.base_lr):
                    lr = base * self.scales[i]
                    if lr - lr * self.s.factor > 1e-8:
                        self.scales[i] *= self.s.factor
                self.bad_epochs = 0
        self.apply()

    def apply(self) -> None:
        cycle = self._one_cycle(self.steps) if self.s.name == "onecycle" else None
        for i, (group, base) in enumerate(zip(self.optimizer.param_groups, self.base_lr)):
            group["lr"] = self.lr(i, base, cycle)
            if cycle and self.cycle_momentum:
                momentum = cycle[1]
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum

    def lr(self, i: int, base: float, cycle: tuple[float, float] | None) -> float:
        """Group i's lr for the next step, given its configured lr `base`."""
        s = self.s
        if s.name == "step":
            return base * s.gamma ** (self.epochs // s.step_size)
        if s.name == "plateau":
            return base * self.scales[i]
        if s.name == "cosine":
            return s.min_lr + (base - s.min_lr) * (1 + math.cos(math.pi * self.steps / self.total)) / 2
        if s.name == "onecycle":
            return base * cycle[0]
        return base

    def _one_cycle(self, k: int) -> tuple[float, float]:
        """(multiple of the configured lr, momentum) at step k: cosine warm-up from lr/25 to lr over
        pct_start of the steps, then cosine down to lr/25/1e4; momentum moves the other way,
        0.95 -> 0.85 -> 0.95."""
        start, peak, end = 1 / 25, 1.0, 1 / 25 / 1e4
        warm_end = self.s.pct_start * self.total - 1
        # a phase of zero length (torch raises ZeroDivisionError there) counts as finished
        if k <= warm_end:
            pct, (lr0, lr1), (m0, m1) = k / warm_end if warm_end > 0 else 1.0, (start, peak), (0.95, 0.85)
        else:
            span = (self.total - 1) - warm_end
            pct, (lr0, lr1), (m0, m1) = (k - warm_end) / span if span > 0 else 1.0, (peak, end), (0.85, 0.95)
        cos = (math.cos(math.pi * pct) + 1) / 2
        return lr1 + (lr0 - lr1) * cos, m1 + (m0 - m1) * cos

    def state_dict(self) -> dict:
        return {"name": self.s.name, "base_lr": self.base_lr, "total": self.total, "steps": self.steps,
                "epochs": self.epochs, "best": self.best, "bad_epochs": self.bad_epochs, "scales": self.scales}

    def load_state_dict(self, state: dict) -> None:
        """Continue the checkpoint's schedule: its lr and its length in steps, whatever the config says now."""
        if state.get("name") != self.s.name:
            raise CheckpointError(f"the checkpoint's lr schedule is {state.get('name')}, not this run's "
                                  f"{self.s.name}; resume with the scheduler it was trained with")
        if state["base_lr"] != self.base_lr or (self.per_step and state["total"] != self.total):
            log.info(f"resuming the checkpoint's {self.s.name} schedule (lr {state['base_lr'][0]:g} over "
                     f"{state['total']} steps), not this config's (lr {self.base_lr[0]:g} over {self.total} steps)")
        self.base_lr, self.total = list(state["base_lr"]), state["total"]
        self.steps, self.epochs, self.best = state["steps"], state["epochs"], state["best"]
        self.bad_epochs, self.scales = state["bad_epochs"], list(state["scales"])
        self.apply()


def build_schedule(settings, optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return Schedule(settings, optimizer, epochs * steps_per_epoch)
