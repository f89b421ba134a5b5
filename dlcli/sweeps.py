"""Sweep summaries: one row per job, a table, sweep.csv / sweep.json, a heatmap and the curves.

Used at the end of every `dlcli train -m` (through the Hydra callback
dlcli.commands.report.SweepSummary) and by `dlcli report PATH...`, which rebuilds the same from
finished, running or failed sweeps.
It reads only the files runs write, so it works on any mix of run and sweep folders.
"""

import csv
import io
import json
import math
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from dlcli import plots
from dlcli.errors import DlcliError, first_line
from dlcli.files import open_regular, write_atomic

METRICS = ("best_val_acc", "test_acc", "final_train_loss")
NUMBERS = (*METRICS, "epochs", "wall_seconds")
COLUMNS = (
    "job",
    "overrides",
    "status",
    "best_val_acc",
    "test_acc",
    "final_train_loss",
    "epochs",
    "wall_seconds",
    "reason",
    "path",
)


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
    overrides = _read(overrides_file, yaml.safe_load, "YAML") if overrides_file.is_file() else []
    if not isinstance(overrides or [], list):
        raise _unreadable(overrides_file, "not a list of overrides")
    rows = read_metrics(run_dir)
    summary_file = run_dir / "summary.json"
    summary = _read(summary_file, json.loads, "JSON") if os.path.lexists(summary_file) else {"status": "running"}
    if not isinstance(summary, dict):
        raise _unreadable(summary_file, "not a JSON object")
    job = Job(
        job=run_dir.name,
        overrides=" ".join(map(str, overrides or [])),
        status=summary.get("status", "ok"),
        best_val_acc=summary.get("best_val_acc", max((r["val_acc"] for r in rows), default=None)),
        test_acc=summary.get("test_acc"),
        final_train_loss=summary.get("final_train_loss", rows[-1]["train_loss"] if rows else None),
        epochs=summary.get("epochs", len(rows) or None),
        wall_seconds=summary.get("wall_seconds"),
        reason=summary.get("reason", ""),
        path=str(run_dir),
    )
    wrong = [f for f in NUMBERS if not isinstance(getattr(job, f), (int, float, type(None)))]
    if wrong:
        raise _unreadable(summary_file, f"{wrong[0]} is not a number")
    return job


def read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl", ("epoch", "train_loss", "val_acc"))


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The rows of a .jsonl file a run writes (none if it has not yet), each checked to have `fields`."""
    if not path.is_file():
        return []
    lines = [(number, line) for number, line in enumerate(_read(path, str.splitlines, "text"), 1) if line.strip()]
    rows = []
    for number, line in lines:
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise _unreadable(path, f"line {number} is not valid JSON ({first_line(exc)})") from None
        wrong = [f for f in fields if not isinstance(row, dict) or not isinstance(row.get(f), (int, float))]
        if wrong:
            raise _unreadable(path, f"line {number} has no number {wrong[0]}")
        rows.append(row)
    return rows


def _read(path: Path, parse, kind: str):
    if not path.is_file():  # a folder or a pipe by that name: reading one would fail or wait forever
        raise _unreadable(path, "not a regular file")
    try:
        with open_regular(path) as f:  # a FIFO in a run folder would block a plain read forever
            text = f.read().decode()
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, str(exc)) from None
    try:
        return parse(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise _unreadable(path, f"not valid {kind} ({first_line(exc)})") from None


def _unreadable(path: Path, reason: str) -> DlcliError:
    return DlcliError(
        f"cannot read {path}: {reason}; repair that file, or report on the other runs only (pass their folders)"
    )


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders (those with a .hydra/ of their own) at or below each path, in job order."""
    runs: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise DlcliError(f"{path} is not a folder; pass run or sweep folders, e.g. outputs/multirun/<date>/<time>")
        found = sorted(
            {f.parent.parent for f in path.rglob(".hydra/overrides.yaml")},
            key=lambda p: (str(p.parent), _job_number(p)),
        )
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


def settings(job: Job) -> dict[str, str]:
    """The job's overrides as key -> value text, exactly as given; not trainer.resume, which a sweep
    continued with trainer.resume=auto adds to some jobs and not others, and which changes no result."""
    given = (item.partition("=") for item in job.overrides.split())
    return {key: value for key, _, value in given if key != "trainer.resume"}


def override_keys(jobs: list[Job]) -> list[str]:
    """Every override key of any job, in the order they first appear."""
    return list(dict.fromkeys(key for job in jobs for key in settings(job)))


def varying_parameters(jobs: list[Job]) -> dict[str, list]:
    """Override keys that differ across the jobs, with the values they take, sorted.

    A key that some jobs do not set differs too: those jobs ran with the config's value.
    """
    unset = object()
    per_job = [_values(job) for job in jobs]
    varying = {}
    for key in override_keys(jobs):
        values = {s.get(key, unset) for s in per_job}
        if len(values) > 1:
            varying[key] = sorted(values - {unset}, key=lambda x: (isinstance(x, str), x))
    return varying


def _values(job: Job) -> dict:
    return {key: _number(value) for key, value in settings(job).items()}


def _number(text: str):
    """A value to compare: a number when it is one; true/false as Hydra reads them, in any case."""
    try:
        number = float(text)
    except ValueError:
        return text.lower() if text.lower() in ("true", "false") else text
    return text if math.isnan(number) else number


def compact(text: str) -> str:
    """An override value for the eye: at most 4 significant digits (0.0010000000000000002 -> 0.001)."""
    try:
        return text if text.lstrip("+-").isdigit() else format(float(text), ".4g")
    except ValueError:
        return text


def _shown(job: Job, keys) -> str:
    return " ".join(f"{k}={compact(v)}" for k, v in settings(job).items() if k in keys)


def write_report(jobs: list[Job], out: Path, metric: str = "best_val_acc") -> dict[str, Path]:
    """sweep.csv, sweep.json and the pictures in `out`; returns what it wrote.

    Everything is read and drawn before the first file is written, so a failure leaves no half report.
    """

    params = [k for k in override_keys(jobs) if k not in COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=(*COLUMNS[:2], *params, *COLUMNS[2:]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({**asdict(j), **{k: v for k, v in settings(j).items() if k in params}} for j in jobs)
    best = next((j for j in jobs if getattr(j, metric) is not None), None)
    report = {"metric": metric, "best": best.job if best else None, "jobs": [asdict(j) for j in jobs]}
    folds = cross_validation(jobs)
    if folds:
        report["cross_validation"] = folds
    files = {
        "csv": ("sweep.csv", buffer.getvalue().encode()),
        "json": ("sweep.json", (json.dumps(report, indent=2) + "\n").encode()),
    }

    varying = varying_parameters(jobs)
    curves = [(_shown(j, varying) or j.job, read_metrics(out / j.path)) for j in jobs]
    if any(rows for _, rows in curves):
        files["curves"] = ("sweep_val_acc.png", plots.sweep_curves(curves))
    flows = [
        (label, read_jsonl(out / j.path / "diagnostics.jsonl", ("epoch", "depth", "grad_norm")))
        for (label, _), j in zip(curves, jobs)
    ]
    if any(rows for _, rows in flows):
        files["gradients"] = ("sweep_gradient_flow.png", plots.sweep_gradient_flow([f for f in flows if f[1]]))
    through_time = [
        (label, read_jsonl(out / j.path / "time_gradients.jsonl", ("epoch", "step", "grad_norm")))
        for (label, _), j in zip(curves, jobs)
    ]
    if any(rows for _, rows in through_time):
        files["through_time"] = (
            "sweep_gradient_through_time.png",
            plots.sweep_gradient_through_time([f for f in through_time if f[1]]),
        )
    grid = heatmap_grid(jobs, metric)
    if grid is not None:
        (x_name, xs), (y_name, ys), cells = grid
        files["heatmap"] = ("sweep_heatmap.png", plots.heatmap(x_name, xs, y_name, ys, cells, metric))

    for name, data in files.values():
        write_atomic(out / name, lambda f, data=data: f.write(data), binary=True)
    return {key: out / name for key, (name, _) in files.items()}


def cross_validation(jobs: list[Job]) -> list[dict]:
    """The jobs that differ only in data.fold, grouped: each fold's best val and test accuracy, and
    their mean and standard deviation (n - 1: the folds are a sample of the splits there could be)
    over the folds that finished."""
    groups: dict[str, list[tuple[int, Job]]] = {}
    for job in jobs:
        given = settings(job)
        if "data.fold" in given:
            rest = " ".join(f"{k}={v}" for k, v in given.items() if k not in ("data.fold", "trainer.resume"))
            groups.setdefault(rest, []).append((int(_number(given["data.fold"])), job))
    summaries = []
    for rest, members in groups.items():
        members.sort(key=lambda member: member[0])
        row = {"overrides": rest, "folds": [fold for fold, _ in members], "finished": 0}
        for metric in ("best_val_acc", "test_acc"):
            each = {fold: getattr(job, metric) for fold, job in members if job.status == "ok"}
            values = [v for v in each.values() if v is not None]
            row["finished"] = len(values)
            row[metric] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "each": each,
            }
        summaries.append(row)
    return summaries


def cross_validation_lines(summaries: list[dict]) -> list[str]:
    def spread(numbers: dict) -> str:
        if numbers["mean"] is None:
            return "-"
        std = f" ± {numbers['std']:.2%}" if numbers["std"] is not None else ""
        each = ", ".join(f"{v:.2%}" for v in numbers["each"].values() if v is not None)
        return f"{numbers['mean']:.2%}{std} ({each})"

    return [
        f"{len(row['folds'])}-fold cross-validation{' of ' + row['overrides'] if row['overrides'] else ''} "
        f"({row['finished']} of {len(row['folds'])} folds finished): best val acc {spread(row['best_val_acc'])}; "
        f"test acc {spread(row['test_acc'])}"
        for row in summaries
    ]


def heatmap_grid(jobs: list[Job], metric: str):
    """For a grid sweep over two numeric parameters: their values and the metric per cell.

    Random or Bayesian searches (every value different) are not grids and get no heatmap;
    jobs that set only one of the two, or neither, are left out of it.
    """
    params = varying_parameters(jobs)
    if len(params) != 2 or not all(len(vs) > 1 and all(isinstance(v, float) for v in vs) for vs in params.values()):
        return None
    (y_name, ys), (x_name, xs) = params.items()  # the first override down, the second across
    placed = [(job, s) for job, s in zip(jobs, map(_values, jobs)) if y_name in s and x_name in s]
    if len({(s[y_name], s[x_name]) for _, s in placed}) < len(xs) * len(ys):
        return None
    cells: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for job, setting in placed:
        value = getattr(job, metric)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            cells[ys.index(setting[y_name])][xs.index(setting[x_name])] = value
    return (x_name, xs), (y_name, ys), cells


def print_table(jobs: list[Job], metric: str, title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # one column per override that differs (every override when none does); sweep.csv has them all
    keys = list(varying_parameters(jobs)) or override_keys(jobs)
    table = Table(title=title)
    table.add_column("")
    table.add_column("job", justify="right")
    for key in keys:
        table.add_column(key, justify="right")
    for column in ("best val acc", "test acc", "final train loss", "epochs", "seconds"):
        table.add_column(column, justify="right")
    table.add_column("status")
    best = next((j for j in jobs if getattr(j, metric) is not None), None)
    pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
    num = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    for j in jobs:
        status = j.status if not j.reason else f"{j.status}: {j.reason}"
        style = {"ok": "green", "running": "yellow"}.get(j.status, "red")
        values = settings(j)  # blank where a job does not set the key
        shown = [escape(compact(values[k])) if k in values else "" for k in keys]
        table.add_row(
            "★" if j is best else "",
            j.job,
            *shown,
            pct(j.best_val_acc),
            pct(j.test_acc),
            num(j.final_train_loss, ".4f"),
            num(j.epochs, "d"),
            num(j.wall_seconds, ".1f"),
            f"[{style}]{escape(status)}[/{style}]",
        )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for line in cross_validation_lines(cross_validation(jobs)):
        console.print(escape(line))


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
