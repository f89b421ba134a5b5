"""`dlcli gradcheck`: every parameter's backprop gradient against central differences, in float64.

For each sampled coordinate θ_i the numeric derivative is (f(θ+h e_i) − f(θ−h e_i)) / 2h with
f = loss + penalty on one fixed random batch, the model in eval mode (dropout off, batch norm on
its running statistics), so f is a deterministic function of θ.

Kinks: ReLU at 0, max pooling when the maximum changes hands and |w| at 0 (L1) are not
differentiable. If θ_i ± h straddles one, the one-sided differences (f(θ+h)−f(θ))/h and
(f(θ)−f(θ−h))/h disagree by the jump in slope; such a coordinate is measured again with h/100,
and if it still straddles, it is counted as a kink and left out of the verdict. A wrong gradient
on smooth ground shows no such disagreement, so it still fails.
"""

import math
from dataclasses import dataclass

import hydra
from omegaconf import DictConfig

from dlcli.commands.guard import run_guarded
from dlcli.errors import CheckFailed
from dlcli.settings import load_settings, require, short_name


@hydra.main(version_base="1.3", config_path="pkg://dlcli.configs", config_name="gradcheck")
def main(cfg: DictConfig) -> None:
    run_guarded(run_gradcheck, cfg)


@dataclass
class TensorCheck:
    name: str
    shape: tuple[int, ...]
    checked: int
    kinks: int
    max_abs: float
    max_rel: float | None  # None: no gradient was large enough for a relative error to mean anything
    passed: bool


def check_gradients(
    model,
    loss_fn,
    penalty,
    x,
    y,
    samples: int,
    h: float,
    tol: float,
    atol: float,
    min_grad: float = 1e-3,
    seed: int = 0,
) -> tuple[list[TensorCheck], float, float]:
    """Compare autograd with central differences for `samples` coordinates of every parameter.

    Returns the per-tensor results and the absolute tolerance and gradient size actually used.
    """
    import torch

    def f() -> float:
        with torch.no_grad():
            return float(loss_fn(model(x), y) + (penalty() if penalty.active else 0.0))

    model.zero_grad(set_to_none=True)
    objective = loss_fn(model(x), y) + (penalty() if penalty.active else 0.0)
    objective.backward()
    # rounding in f(θ±h) alone leaves an error of about eps·|f|/h in the numeric derivative: no
    # comparison can be finer than that, so both thresholds rise with |f| (a large L1 penalty, say)
    floor = 10 * torch.finfo(torch.float64).eps * abs(float(objective.detach())) / h
    atol, min_grad = max(atol, floor), max(min_grad, floor / tol)
    gen = torch.Generator().manual_seed(seed)
    results = []
    for name, param in model.named_parameters():
        flat, grad = param.data.view(-1), param.grad.view(-1) if param.grad is not None else None
        n = flat.numel()
        coords = range(n) if samples <= 0 or samples >= n else torch.randperm(n, generator=gen)[:samples].tolist()
        worst_abs, worst_rel = 0.0, None
        kinks, failed_small = 0, False
        for i in coords:
            analytic = float(grad[i]) if grad is not None else 0.0
            numeric, jump = _central_difference(f, flat, i, h)
            if not _close(analytic, numeric, tol, atol, min_grad) and jump >= 0.5 * abs(analytic - numeric):
                numeric, jump = _central_difference(f, flat, i, h / 100)  # a kink inside [θ−h, θ+h]?
                if not _close(analytic, numeric, tol, atol, min_grad) and jump >= 0.5 * abs(analytic - numeric):
                    kinks += 1
                    continue
            err = abs(analytic - numeric)
            worst_abs = max(worst_abs, err)
            if max(abs(analytic), abs(numeric)) >= min_grad:
                worst_rel = max(worst_rel or 0.0, err / max(abs(analytic), abs(numeric)))
            elif err > atol:
                failed_small = True
        passed = (worst_rel or 0.0) <= tol and not failed_small
        results.append(TensorCheck(name, tuple(param.shape), len(coords), kinks, worst_abs, worst_rel, passed))
    return results, atol, min_grad


def _close(analytic: float, numeric: float, tol: float, atol: float, min_grad: float) -> bool:
    """Relative error within tol; for gradients below min_grad, absolute error within atol, since
    rounding alone (about 1e-16·f/h) makes relative errors of near-zero gradients meaningless."""
    err, scale = abs(analytic - numeric), max(abs(analytic), abs(numeric))
    return err <= tol * scale if scale >= min_grad else err <= atol


def _central_difference(f, flat, i: int, h: float) -> tuple[float, float]:
    """(f(θ+h) − f(θ−h)) / 2h, and how far the one-sided slopes disagree.

    On smooth ground they differ by about h·f''; across a kink by the jump in slope.
    """
    old = float(flat[i])
    flat[i] = old + h
    up = f()
    flat[i] = old - h
    down = f()
    flat[i] = old
    mid = f()
    return (up - down) / (2 * h), abs((up - mid) / h - (mid - down) / h)


def run_gradcheck(cfg: DictConfig) -> list[TensorCheck]:
    import torch

    from dlcli.data import data_shape
    from dlcli.losses import build_loss
    from dlcli.models import build_model
    from dlcli.regularization import build_penalty

    settings = load_settings(cfg)
    g = cfg.gradcheck
    require(g.h > 0 and g.h < 1, "gradcheck.h", g.h, "a step in (0, 1), e.g. 1e-6")
    require(g.tolerance > 0, "gradcheck.tolerance", g.tolerance, "a number > 0")
    require(g.batch >= 1, "gradcheck.batch", g.batch, "an integer >= 1")
    require(g.samples >= 0, "gradcheck.samples", g.samples, "an integer >= 0 (0 = every coordinate)")
    torch.manual_seed(settings.trainer.seed)
    shape, classes = data_shape(settings.data)
    model = build_model(settings.model, shape, classes).double()
    model.eval()
    x = torch.randn(g.batch, *shape, dtype=torch.float64)
    y = torch.arange(g.batch) % classes
    penalty = build_penalty(settings.regularization, model)
    results, atol, min_grad = check_gradients(
        model, build_loss(settings.loss, y, classes), penalty, x, y, g.samples, g.h, g.tolerance, g.atol, g.min_grad
    )
    print_results(results, settings, g, atol, min_grad)
    failed = [r.name for r in results if not r.passed]
    if failed:
        raise CheckFailed(
            f"gradient check failed for {', '.join(failed)}: relative error above {g.tolerance:g} (see the table)"
        )
    return results


def print_results(results: list[TensorCheck], settings, g, atol: float, min_grad: float) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    title = (
        f"gradient check: {short_name(settings.model)} ({getattr(settings.model, 'activation', 'relu')}), "
        f"loss {short_name(settings.loss)}, regularization {short_name(settings.regularization)}; float64, "
        f"h={g.h:g}, batch {g.batch}, tolerance {g.tolerance:g}"
    )
    table = Table(title=title)
    for column in (
        "parameter",
        "shape",
        "checked",
        "kinks",
        "max abs error",
        f"max rel error (|g| ≥ {min_grad:.1g})",
        "result",
    ):
        table.add_column(column, justify="left" if column in ("parameter", "result") else "right")
    for r in results:
        verdict = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(
            r.name,
            "x".join(map(str, r.shape)),
            str(r.checked),
            str(r.kinks) if r.kinks else "",
            f"{r.max_abs:.2e}",
            "-" if r.max_rel is None else f"{r.max_rel:.2e}",
            verdict,
        )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    worst = max((r.max_rel for r in results if r.max_rel is not None), default=0.0)
    checked = sum(r.checked - r.kinks for r in results)
    kinks = sum(r.kinks for r in results)
    verdict = "PASS" if all(r.passed for r in results) else "FAIL"
    note = (
        (
            f"; {kinks} coordinates straddled a kink (ReLU or max pooling switching, |w| at 0) even at h/100 "
            "and were left out"
        )
        if kinks
        else ""
    )
    console.print(
        f"{verdict}: {checked} coordinates; largest relative error {worst:.2e} (tolerance {g.tolerance:g}) "
        f"where |gradient| ≥ {min_grad:.1g}; below that, absolute error ≤ {atol:.1g} (the rounding floor "
        f"of f/h){note}"
    )
    if math.isnan(worst):
        console.print("the loss is NaN at these weights")
