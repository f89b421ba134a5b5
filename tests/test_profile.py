"""trainer.profile: a trace of a few steps after warm-up, and the top operators; nothing when off."""

import json

import pytest

from dlcli.profiling import ACTIVE

RUN = ["trainer.epochs=1", "data.n_samples=600", "trainer.batch_size=16", "model.width=16", "trainer.progress=false"]


@pytest.mark.slow
def test_a_profiled_run_writes_a_trace_and_prints_the_top_operators(dlcli, tmp_path):
    proc = dlcli("train", *RUN, "trainer.profile=true", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr
    (trace,) = (tmp_path / "run" / "profile").glob("*.pt.trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}
    assert len(steps) == ACTIVE  # the recorded steps, after the skipped and warm-up ones
    assert any(e.get("name") == "aten::addmm" for e in events)
    out = proc.stdout + proc.stderr
    assert "trainer.profile: the top operators" in out and "Self CPU" in out and "aten::addmm" in out
    assert "ERROR" not in out and "USDT" not in out  # the profiler library's own stage lines are kept quiet
    proc = dlcli("train", *RUN, "hydra.run.dir=plain")
    assert proc.returncode == 0 and not (tmp_path / "plain" / "profile").exists()
