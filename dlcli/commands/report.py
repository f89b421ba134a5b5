"""`dlcli report PATH...`, and the summary every `dlcli train -m` prints when its sweep ends."""

import argparse
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from dlcli.commands.guard import REFUSED
from dlcli.errors import DlcliError
from dlcli.sweeps import METRICS, summarize


class SweepSummary(Callback):
    """Hydra callback: after a multirun, the summary table and files in the sweep folder.

    Exits non-zero when any job failed, after the summary has been printed.
    """

    def __init__(self, metric: str = "best_val_acc") -> None:
        self.metric = metric

    def on_multirun_start(self, config, **kwargs) -> None:
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):
            import optuna

            # Optuna's own handler colours its lines even into a pipe or a file; Hydra's handlers print
            # them like the sweeper's other lines
            optuna.logging.disable_default_handler()
            optuna.logging.enable_propagation()

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        try:
            jobs = summarize([sweep_dir], sweep_dir, self.metric)
        except DlcliError as exc:
            print(f"dlcli: error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        refused = sweep_dir / REFUSED  # jobs of a continued sweep whose folders hold other jobs' runs
        if refused.is_file():
            lines = refused.read_text().splitlines()
            refused.unlink()
            print(
                f"dlcli: error: {len(lines)} job(s) refused: their folders hold other overrides' runs (kept, and "
                f"in the table above as they were); {lines[0]}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
        failed = [j for j in jobs if j.status not in ("ok", "running")]
        if failed:
            print(f"dlcli: error: {len(failed)} of {len(jobs)} jobs failed", file=sys.stderr, flush=True)
            raise SystemExit(1)


def main(argv: list[str]) -> int:
    """`dlcli report PATH... [--out DIR] [--metric NAME]`."""
    parser = argparse.ArgumentParser(
        prog="dlcli report",
        description="Summarize run and sweep folders: a table, "
        "sweep.csv, sweep.json, a heatmap and the validation curves.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="sweep folders (outputs/multirun/<date>/<time>) or runs")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write the files (default: the sweep folder when one is "
        "given, else outputs/report/<date>/<time>)",
    )
    parser.add_argument("--metric", default="best_val_acc", choices=METRICS, help="sort by (default best_val_acc)")
    args = parser.parse_args(argv)
    out = args.out
    if out is None:
        single_sweep = len(args.paths) == 1 and (args.paths[0] / "multirun.yaml").is_file()
        out = args.paths[0] if single_sweep else Path("outputs/report") / time.strftime("%Y-%m-%d/%H-%M-%S")
    if out.exists() and not out.is_dir():
        print(f"dlcli: error: --out {out} is a file; pass a folder to write the report into", file=sys.stderr)
        return 2
    try:
        summarize(args.paths, out, args.metric)
    except DlcliError as exc:
        print(f"dlcli: error: {exc}", file=sys.stderr)
        return 2
    return 0
