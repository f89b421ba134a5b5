"""Fault injection: SIGKILL a real `dlcli train` at random moments, resume it each time with
trainer.resume=auto, and check that it ends with exactly the numbers of an uninterrupted run.

    python scripts/kill_resume.py --kills 10 model=lenet data=mnist data.subset=6000 trainer.epochs=4

After every kill, checkpoints/last.pt (and best.pt, if there) must load. Timing fields
(epoch_seconds, samples_per_second, wall_seconds, startup_seconds, peak_rss_mb) are left out of
the comparison; every other number in metrics.jsonl and summary.json must be equal.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMING = {"epoch_seconds", "samples_per_second", "wall_seconds", "startup_seconds", "peak_rss_mb", "versions"}


def dlcli(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dlcli.cli", "train", *args, "trainer.progress=false"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def numbers(run: Path) -> tuple[list[dict], dict]:
    rows = [
        {k: v for k, v in json.loads(line).items() if k not in TIMING}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    summary = {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in TIMING}
    return rows, summary


def kill_and_resume(overrides: list[str], kills: int, seed: int, every: int) -> dict:
    from dlcli.checkpoint import load_checkpoint

    rng = random.Random(seed)
    args = [*overrides, f"trainer.checkpoint_every_steps={every}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        ref = dlcli([*args, "hydra.run.dir=ref"], tmp)
        assert ref.wait() == 0, ref.stderr.read().decode()
        duration = time.perf_counter() - start
        landed, moments, mid_epoch = 0, [], 0
        while landed < kills:
            proc = dlcli([*args, "trainer.resume=auto", "hydra.run.dir=cut"], tmp)
            moment = rng.uniform(0.5, 1.0) * duration  # past start-up, most of the time
            time.sleep(moment)
            if proc.poll() is not None:  # it finished first: run the rest again from scratch to go on killing
                if (tmp / "cut" / "summary.json").exists():
                    for f in (tmp / "cut").rglob("*"):
                        if f.is_file():
                            f.unlink()
                continue
            proc.kill()
            proc.wait()
            landed += 1
            moments.append(round(moment, 2))
            for name in ("last.pt", "best.pt"):
                path = tmp / "cut" / "checkpoints" / name
                if path.exists():
                    state = load_checkpoint(path)  # raises if a kill ever left a torn file
                    mid_epoch += name == "last.pt" and state.get("in_epoch") is not None
        final = dlcli([*args, "trainer.resume=auto", "hydra.run.dir=cut"], tmp)
        assert final.wait() == 0, final.stderr.read().decode()
        ref_rows, ref_summary = numbers(tmp / "ref")
        cut_rows, cut_summary = numbers(tmp / "cut")
        return {
            "kills": landed,
            "kill_seconds": moments,
            "mid_epoch_checkpoints": mid_epoch,
            "uninterrupted_seconds": round(duration, 2),
            "metrics_equal": ref_rows == cut_rows,
            "summary_equal": ref_summary == cut_summary,
            "test_acc": ref_summary.get("test_acc"),
            "epochs": len(ref_rows),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=int, default=10, help="trainer.checkpoint_every_steps")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    result = kill_and_resume(args.overrides, args.kills, args.seed, args.every)
    print(json.dumps(result, indent=2))
    return 0 if result["metrics_equal"] and result["summary_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
