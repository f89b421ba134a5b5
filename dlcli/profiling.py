"""trainer.profile: a torch.profiler trace of a few optimizer steps once training has warmed up."""

import logging
import os
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

log = logging.getLogger("dlcli")

# steps skipped (the first ones allocate and pick kernels), warmed up (traced, then dropped) and recorded
WAIT, WARMUP, ACTIVE = 10, 3, 5
TOP = 15  # operators in the printed table


class StepProfile:
    """Steps WAIT + WARMUP + 1 to WAIT + WARMUP + ACTIVE of the run, traced into <run>/profile/ as
    <host>.<pid>.<time>.pt.trace.json (chrome://tracing, Perfetto, or TensorBoard's profiler plugin
    with --logdir <run>/profile), and the operators that took the most time logged as a table."""

    def __init__(self, run_dir: Path, device: torch.device) -> None:
        self.folder = run_dir / "profile"
        # the profiler's C++ library reports each stage (and a missing GPU as an error) on stderr unless told
        # otherwise, when it starts: the table below is what a user asked for
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        cuda = device.type == "cuda"
        self.sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        self.profiler = profile(
            activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])],
            schedule=schedule(wait=WAIT, warmup=WARMUP, active=ACTIVE, repeat=1),
            on_trace_ready=self._ready,
        )
        self.profiler.start()
        self.stopped, self.steps = False, 0

    def _ready(self, prof) -> None:
        tensorboard_trace_handler(str(self.folder))(prof)
        table = prof.key_averages().table(sort_by=self.sort, row_limit=TOP)
        log.info(f"trainer.profile: the top operators of {ACTIVE} steps, trace in {self.folder}\n{table}")

    def step(self) -> None:
        if not self.stopped:
            self.steps += 1
            self.profiler.step()

    def stop(self) -> None:
        """End the profile however the run ended; a run that stopped inside the recorded window
        gets the trace of the steps recorded so far, one that never reached it gets a line saying so."""
        if self.stopped:
            return
        self.stopped = True
        self.profiler.stop()
        if self.steps <= WAIT + WARMUP:
            log.warning(
                f"trainer.profile: the run took {self.steps} optimizer steps, and the profile skips {WAIT} and "
                f"warms up over {WARMUP} before it records: no trace; train longer (more data or epochs)"
            )
