"""Sweep summaries: one row per job, a table, sweep.csv / sweep.json, a heatmap and the curves.

Used at the end of every `dlcli train -m` (through the Hydra callback `SweepSummary`) and by
`dlcli report PATH...`, which rebuilds the same from finished, running or failed sweeps.
It reads only the files runs write, so it works on any mix of run and sweep folders.
"""

import csv
import io
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from dlcli.errors import DlcliError

METRICS = ("best_val_acc", "test_acc", "final_train_loss")
COLUMNS = ("job", "overrides", "status", "best_val_acc", "test_acc", "final_train_loss", "epochs", "wall_seconds",
           "reason", "path")


@dataclass
class Job:
    job: str
    overrides: str
    status: str  # ok | failed | diverged | running (no summary yet)
    best_val_acc: float | None = None
    test_acc: float | None = None
    final_train_loss: float | None = None
    epochs: int | None = None
    wall_seconds: float | None = None
    reason: str = ""
    path: str = ""


def read_job(run_dir: Path) -> Job:
    """What a run folder says about its job, whether it finished, failed or is still going."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    rows = read_metrics(run_dir)
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {"status": "running"}
    return Job(
        job=run_dir.name,
        overrides=" ".join(overrides or []),
        status=summary.get("status", "ok"),
        best_val_acc=summary.get("best_val_acc", max((r["val_acc"] for r in rows), default=None)),
        test_acc=summary.get("test_acc"),
        final_train_loss=summary.get("final_train_loss", rows[-1]["train_loss"] if rows else None),
        epochs=summary.get("epochs", len(rows) or None),
        wall_seconds=summary.get("wall_seconds"),
        reason=summary.get("reason", ""),
        path=str(run_dir),
    )


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (those with a .hydra/ of their own) at or below each path, in job order."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise DlcliError(f"{path} is not a folder; pass run or sweep folders, e.g. outputs/multirun/<date>/<time>")
        found = sorted({f.parent.parent for f in path.rglob(".hydra/overrides.yaml")},
                       key=lambda p: (str(p.parent), _job_number(p)))
        if not found:
            raise DlcliError(f"{path} holds no dlcli runs (no .hydra/overrides.yaml below it)")
        runs += [p for p in found if p not in runs]
    return runs


def _job_number(run_dir: Path) -> tuple:
    return (0, int(run_dir.name), "") if run_dir.name.isdigit() else (1, 0, run_dir.name)


def sort_jobs(jobs: list[Job], metric: str) -> list[Job]:
    """Best first by `metric` (lowest first for a loss); jobs without the number last."""
    sign = 1 if metric.endswith("loss") else -1
    return sorted(jobs, key=lambda j: (getattr(j, metric) is None, sign * (getattr(j, metric) or 0)))


def varying_parameters(jobs: list[Job]) -> dict[str, list]:
    """Override keys that take more than one value across the jobs, with their sorted values."""
    values: dict[str, set] = {}
    for job in jobs:
        for item in job.overrides.split():
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(_number(value))
    return {k: sorted(v, key=lambda x: (isinstance(x, str), x)) for k, v in values.items() if len(v) > 1}


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def write_report(jobs: list[Job], out: Path, metric: str = "best_val_acc") -> dict[str, Path]:
    """sweep.csv, sweep.json and the pictures in `out`; returns what it wrote."""
    from dlcli import plots
    from dlcli.files import write_atomic, write_json

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(j) for j in jobs)
    write_atomic(out / "sweep.csv", lambda f: f.write(buffer.getvalue()))
    written["csv"] = out / "sweep.csv"
    best = next((j for j in jobs if getattr(j, metric) is not None), None)
    write_json(out / "sweep.json", {"metric": metric, "best": best.job if best else None,
                                     "jobs": [asdict(j) for j in jobs]})
    written["json"] = out / "sweep.json"

    varying = set(varying_parameters(jobs))
    curves = [(" ".join(o for o in j.overrides.split() if o.partition("=")[0] in varying) or j.job,
               read_metrics(out / j.path)) for j in jobs]
    if any(rows for _, rows in curves):
        written["curves"] = plots.sweep_curves(curves, out / "sweep_val_acc.png")
    from dlcli.diagnostics import read_diagnostics

    flows = [(label, read_diagnostics(out / j.path)) for (label, _), j in zip(curves, jobs)]
    if any(rows for _, rows in flows):
        written["gradients"] = plots.sweep_gradient_flow([f for f in flows if f[1]], out / "sweep_gradient_flow.png")
    grid = heatmap_grid(jobs, metric)
    if grid is not None:
        (x_name, xs), (y_name, ys), cells = grid
        written["heatmap"] = plots.heatmap(x_name, xs, y_name, ys, cells, out / "sweep_heatmap.png", metric)
    return written


def heatmap_grid(jobs: list[Job], metric: str):
    """For a grid sweep over two numeric parameters: their values and the metric per cell.

    Random or Bayesian searches (every value different) are not grids and get no heatmap.
    """
    params = varying_parameters(jobs)
    if len(params) != 2 or not all(all(isinstance(v, float) for v in vs) for vs in params.values()):
        return None
    (y_name, ys), (x_name, xs) = params.items()  # the first override down, the second across
    settings = [{k: _number(v) for k, _, v in (item.partition("=") for item in job.overrides.split())}
                for job in jobs]
    if len({(s[y_name], s[x_name]) for s in settings}) < len(xs) * len(ys):
        return None
    cells: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for job, setting in zip(jobs, settings):
        value = getattr(job, metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            cells[ys.index(setting[y_name])][xs.index(setting[x_name])] = value
    return (x_name, xs), (y_name, ys), cells


def print_table(jobs: list[Job], metric: str, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("", "job", "overrides", "best val acc", "test acc", "final train loss", "epochs", "seconds",
                   "status"):
        table.add_column(column, justify="right" if column not in ("overrides", "status", "") else "left")
    best = next((j for j in jobs if getattr(j, metric) is not None), None)
    varying = set(varying_parameters(jobs))  # the table shows what differs; sweep.csv has every override
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    num = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    for j in jobs:
        status = j.status if not j.reason else f"{j.status}: {j.reason}"
        style = {"ok": "green", "running": "yellow"}.get(j.status, "red")
        shown = " ".join(o for o in j.overrides.split() if o.partition("=")[0] in varying) or j.overrides
        table.add_row("★" if j is best else "", j.job, shown, pct(j.best_val_acc), pct(j.test_acc),
                      num(j.final_train_loss, ".4f"), num(j.epochs, "d"), num(j.wall_seconds, ".1f"),
                      f"[{style}]{status}[/{style}]")
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def summarize(paths: list[Path], out: Path, metric: str = "best_val_acc") -> list[Job]:
    jobs = sort_jobs([read_job(p) for p in find_runs(paths)], metric)
    for job in jobs:  # relative to the report inside a sweep folder, so the files read the same from anywhere
        path = Path(job.path).resolve()
        job.path = str(path.relative_to(out.resolve())) if path.is_relative_to(out.resolve()) else str(path)
    written = write_report(jobs, out, metric)
    title = f"{len(jobs)} jobs, sorted by {metric.replace('_', ' ')} (★ best)"
    print_table(jobs, metric, title)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return jobs


class SweepSummary(Callback):
    """Hydra callback: after a multirun, the summary table and files in the sweep folder.

    Exits non-zero when any job failed, after the summary has been printed.
    """

    def __init__(self, metric: str = "best_val_acc") -> None:
        self.metric = metric

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        try:
            jobs = summarize([sweep_dir], sweep_dir, self.metric)
        except DlcliError as exc:
            print(f"dlcli: error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        failed = [j for j in jobs if j.status not in ("ok", "running")]
        if failed:
            print(f"dlcli: error: {len(failed)} of {len(jobs)} jobs failed", file=sys.stderr, flush=True)
            raise SystemExit(1)


def main(argv: list[str]) -> int:
    """`dlcli report PATH... [--out DIR] [--metric NAME]`."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="dlcli report", description="Summarize run and sweep folders: a table, "
                                     "sweep.csv, sweep.json, a heatmap and the validation curves.")
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders (outputs/multirun/<date>/<time>) or runs")
    parser.add_argument("--out", type=Path, help="where to write the files (default: the sweep folder when one is "
                        "given, else outputs/report/<date>/<time>)")
    parser.add_argument("--metric", default="best_val_acc", choices=METRICS, help="sort by (default best_val_acc)")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        single_sweep = len(args.paths) == 1 and (args.paths[0] / "multirun.yaml").is_file()
        out = args.paths[0] if single_sweep else Path("outputs/report") / time.strftime("%Y-%m-%d/%H-%M-%S")
    try:
        summarize(args.paths, out, args.metric)
    except DlcliError as exc:
        print(f"dlcli: error: {exc}", file=sys.stderr)
        return 2
    return 0
