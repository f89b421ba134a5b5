"""A run's folder: its files get the umask's permissions."""

import os
import subprocess
import sys

import pytest

from conftest import FAST_TOY


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_result_files_get_the_umasks_permissions(tmp_path, cache_dir, umask, mode):
    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    for args in (["train", *FAST_TOY, "hydra.run.dir=run"], ["report", "run", "--out", "report"]):
        subprocess.run([sys.executable, "-m", "dlcli.cli", *args], cwd=tmp_path, env=env, umask=umask, check=True,
                       capture_output=True)
    files = ["run/summary.json", "run/metrics.jsonl", "run/metrics.csv", "run/checkpoints/best.pt",
             "run/checkpoints/last.pt", "report/sweep.csv", "report/sweep.json"]
    assert {f: oct((tmp_path / f).stat().st_mode & 0o777) for f in files} == {f: oct(mode) for f in files}
