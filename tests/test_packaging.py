"""The configs ship inside the package: a built wheel finds them from any directory."""

import subprocess
import sys
import zipfile

import pytest

from conftest import REPO


@pytest.mark.slow
def test_wheel_carries_the_configs_and_runs_from_elsewhere(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("dlcli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for config in (
        "train.yaml",
        "eval.yaml",
        "predict.yaml",
        "export.yaml",
        "model/lenet.yaml",
        "data/toy.yaml",
        "trainer/default.yaml",
        "logger/mlflow.yaml",
    ):
        assert f"dlcli/configs/{config}" in names
    # every module of the package, sub-packages too: the editable install that runs this test would
    # otherwise lend the wheel whatever it lacks
    modules = {str(path.relative_to(REPO)) for path in (REPO / "dlcli").rglob("*.py")}
    assert modules <= set(names), sorted(modules - set(names))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "import dlcli, sys; print(dlcli.__file__); from dlcli.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", "model=lenet", "--cfg", "job"],
        cwd=elsewhere,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(target)) and "_target_: dlcli.models.LeNet5" in proc.stdout
