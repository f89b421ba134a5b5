"""scripts/bench.py runs end to end at a tiny size and writes well-formed JSON (it times nothing here)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow
def test_bench_tiny_writes_every_number(tmp_path, cache_dir):
    out = tmp_path / "bench.json"
    env = {"DLCLI_CACHE": str(cache_dir), "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [r["model"] for r in result["models"]] == ["mlp", "lenet", "alexnet"]
    for row in result["models"]:
        for key in ("dlcli_images_per_s", "floor_images_per_s", "recipe_images_per_s", "eval_images_per_s"):
            assert row[key] > 0, (row["model"], key)
        # the ratios come from the unrounded rates; the rates are written rounded to 0.1 image/s
        assert row["dlcli_over_floor"] == pytest.approx(row["dlcli_images_per_s"] / row["floor_images_per_s"], abs=2e-3)
        assert row["dlcli_over_recipe"] == pytest.approx(
            row["dlcli_images_per_s"] / row["recipe_images_per_s"], abs=2e-3
        )
    startup = result["startup"]
    assert startup["help_seconds"] > 0 and startup["peak_rss_mb"] > 0
    assert startup["start_to_first_step_seconds"] is None or startup["start_to_first_step_seconds"] > 0
    assert "dlcli/floor" in proc.stdout


def run_bench(tmp_path, cache_dir, data_root, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """bench.py --tiny with `args` on the real MNIST files, and the JSON it wrote."""
    import os

    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), *args, "--tiny", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DLCLI_CACHE": str(cache_dir), "DLCLI_DATA": str(data_root)},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_storage_tiny_measures_both_paths_and_the_build(tmp_path, cache_dir, mnist_root):
    proc, result = run_bench(tmp_path, cache_dir, mnist_root, "--storage")
    s = result["storage"]
    assert s["memory_images_per_s"] > 0 and s["disk_images_per_s"] > 0
    assert s["disk_over_memory"] == pytest.approx(s["disk_images_per_s"] / s["memory_images_per_s"], abs=2e-3)
    assert s["peak_rss_anon_mb"]["memory"] > 100 and s["peak_rss_anon_mb"]["disk"] > 100
    assert s["build_1_process_images_per_s"] > 0 and s["build_speedup"] > 0
    assert "cache build, 200 JPEG photos" in proc.stdout


@pytest.mark.slow
def test_bench_augment_tiny_times_each_policy_against_none(tmp_path, cache_dir, mnist_root):
    proc, result = run_bench(tmp_path, cache_dir, mnist_root, "--augment", "--models", "lenet")
    s = result["augmentation"]
    assert set(s["train_images_per_s"]) == {"none", "randaugment", "trivialaugment", "autoaugment", "erasing 0.25"}
    assert s["over_none"]["none"] == 1.0 and all(rate > 0 for rate in s["transform_images_per_s"].values())
    assert "data.policy and data.erasing, lenet on Fashion-MNIST" in proc.stdout
