"""Data-parallel training on torch.distributed: several processes, one run.

Two ways in, one code path (dlcli.commands.train.run_training in every process, handed to `launch`):
- `dlcli train trainer.devices=N`: this process composed the config and holds the run folder;
  `launch` starts N workers on this machine with torch's elastic launcher and waits for them.
- `torchrun ... -m dlcli train ...` (or SLURM tasks): every process composed the config itself;
  `agree_on_folder`, called from the RunFolder callback, gives every rank rank 0's run folder.
Every process draws the same epoch order and takes its share of each global batch;
DistributedDataParallel averages the gradients. Metrics are summed over the processes, so
every rank sees the same numbers and takes the same decisions (best epoch, divergence, stop).
Rank 0 writes every file.
"""

import logging
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from dlcli import interrupts
from dlcli.errors import ConfigError, DlcliError, Interrupted, ProcessesFailed, first_line
from dlcli.layout import last_checkpoint
from dlcli.machine import resolve_device

log = logging.getLogger("dlcli")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # on this machine: which GPU it takes
    local_size: int = 1  # processes on this machine: how many CPU cores each gets

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.size

    def sum_(self, tensor):
        """Sum `tensor` over the processes, in place."""
        if self.size > 1:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def any_signal(self, signum: int | None, device) -> int | None:
        """A stop signal that reached any process (the largest number), so that all stop at one step."""
        if self.size == 1:
            return signum
        import torch
        import torch.distributed as dist

        flag = torch.tensor([signum or 0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag) or None

    def gather(self, obj: Any) -> list:
        """`obj` from every process, in rank order (on every process)."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()


def place() -> tuple[int, int, int, int] | None:
    """(rank, size, local rank, local size) given by torchrun or SLURM; None for a process on its own."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        size = int(env["WORLD_SIZE"])
        local_size = int(env.get("LOCAL_WORLD_SIZE", size))
        return (int(env["RANK"]), size, int(env.get("LOCAL_RANK", 0)), local_size) if size > 1 else None
    # srun's tasks (submitit's hydra/launcher=slurm with tasks_per_node > 1); a batch script's own step has one
    size = int(env.get("SLURM_STEP_NUM_TASKS", 1))
    if size > 1 and "SLURM_PROCID" in env:
        local_size = int(env.get("SLURM_NTASKS_PER_NODE", "0").split("(")[0] or 0) or size
        return int(env["SLURM_PROCID"]), size, int(env.get("SLURM_LOCALID", 0)), local_size
    return None


def rank() -> int:
    where = place()
    return where[0] if where else 0


def join(device: str, timeout: float) -> World:
    """This process's World; the first call in a process of a multi-process run joins its process group.

    nccl with one GPU per process (by local rank) on CUDA, gloo on the CPU. Waits at most
    `timeout` seconds for the others, which then also bounds every collective operation.
    """
    where = place()
    if where is None:
        return World()
    import torch
    import torch.distributed as dist

    rank_, size, local_rank, local_size = where
    world = World(rank_, size, local_rank, local_size)
    if dist.is_initialized():
        return world
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"process {rank_} has local rank {local_rank} but only {torch.cuda.device_count()} "
                "GPU(s) are visible on its machine; start at most one process per GPU"
            )
        torch.cuda.set_device(local_rank)
    _slurm_rendezvous()
    # torch.distributed.nn.functional takes group.WORLD as its functions' default argument when first
    # imported, and DistributedDataParallel imports it (through torch._dynamo) once the group exists. Those
    # defaults then keep the group and gloo's worker threads alive past destroy_process_group, into the
    # interpreter's shutdown, where a worker that needs the GIL to free a tensor is ended inside a
    # destructor: std::terminate, SIGABRT. Imported before the group forms, the defaults are None.
    import torch.distributed.nn.functional

    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout))
    except Exception as exc:
        where_to = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise ProcessesFailed(
            f"the {size} processes did not form a group within trainer.dist_timeout={timeout:g} "
            f"s (this is rank {rank_}, meeting at {where_to}: {first_line(exc)}); start all "
            "of them with the same MASTER_ADDR and MASTER_PORT, or raise trainer.dist_timeout"
        ) from None
    return world


def _slurm_rendezvous() -> None:
    """MASTER_ADDR/PORT for SLURM tasks, which torch's env:// rendezvous reads: the first node of the job."""
    env = os.environ
    if "RANK" in env or "SLURM_PROCID" not in env:
        return
    if "MASTER_ADDR" not in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "localhost")
        if "[" in nodes:  # a compressed list such as gpu[01-04]: SLURM expands it
            nodes = subprocess.run(
                ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
            ).stdout
        env["MASTER_ADDR"] = nodes.replace(",", " ").split()[0]
    env.setdefault("MASTER_PORT", str(15000 + int(env.get("SLURM_JOB_ID", 0)) % 20000))
    env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_STEP_NUM_TASKS"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")


def agree_on_folder(config: Any, option: str, folder: Path, take: Callable[[], None]) -> None:
    """Under torchrun or SLURM every process composed the config and may have resolved ${now:...}
    to another folder: rank 0 takes its folder (`take`, which may refuse it and exit) and the
    others follow it, leaving it to rank 0 to hold and write (they write no .hydra/ and no log)."""
    from omegaconf import OmegaConf, open_dict, read_write

    world = join(
        str(OmegaConf.select(config, "trainer.device", default="auto")),
        float(OmegaConf.select(config, "trainer.dist_timeout", default=300.0)),
    )
    import torch.distributed as dist

    decision: list[Any] = [None]
    try:
        if world.main:
            take()
            decision = [str(folder)]
    except SystemExit as refused:
        decision = [refused.code]
        raise
    finally:
        dist.broadcast_object_list(decision, src=0)
    if world.main:
        return
    if not isinstance(decision[0], str):
        raise SystemExit(decision[0])  # rank 0 said why
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra[option.split(".")[1]].dir = decision[0]
        config.hydra.output_subdir = None
        config.hydra.job_logging.root.handlers = ["console"]
        config.hydra.job_logging.root.level = "WARNING"


def launch(run: Callable[..., dict], settings, config: dict, run_dir: Path, resume: str) -> dict:
    """`dlcli train trainer.devices=N`: run N processes of `run` (the training recipe) on this machine; rank 0's summary.

    A process that dies ends them all (torch's elastic agent stops the others); SIGINT or SIGTERM
    reach every process, which stop at one step with last.pt saved.
    """
    import signal

    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    t = settings.trainer
    resolve_device(t.device)  # trainer.device=cuda without a GPU: that line first
    check_devices(t.device, t.devices, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    logging_config = OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True)
    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=t.devices,
        run_id=f"dlcli-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port on this machine
        rdzv_configs={"timeout": int(t.dist_timeout)},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    # the agent's own report of a failure is a traceback per process; dlcli gives one line
    quiet = (
        []
        if os.environ.get("DLCLI_DEBUG")
        else [
            logging.getLogger(name)
            for name in list(logging.root.manager.loggerDict)
            if name.startswith(("torch.distributed.elastic", "torch.multiprocessing"))
        ]
    )
    levels = {logger: logger.level for logger in quiet}
    for logger in quiet:
        logger.setLevel(logging.CRITICAL)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    # multiprocessing's resource tracker (started with this environment) warns of the semaphore a
    # killed process leaves, after dlcli's line; it cleans it up all the same
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
    # Ctrl-C reaches every process of the terminal's group. Blocked here, it waits in the workers
    # (which inherit the mask) until _worker can take it, not as a traceback while torch imports;
    # they stop and exit with 130, which ends the launch below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with interrupts.graceful(repeated=True):  # the processes stop on their own, each with its last.pt
            results = elastic_launch(launch_config, _worker)(
                run, settings, config, str(run_dir), resume, logging_config
            )
    except ChildFailedError as exc:
        codes = {f.exitcode for f in exc.failures.values()}
        stopped = codes & {128 + signal.SIGINT, 128 + signal.SIGTERM}
        if stopped and min(codes) > 0:  # a signal sent to the processes (the others may have lost contact)
            raise _interrupted(max(stopped) - 128, run_dir, resume) from None
        raise ProcessesFailed(failure_line(exc.failures, resume, run_dir)) from None
    except SignalException as exc:  # the agent passed the signal on and waited for the processes to stop
        raise _interrupted(exc.sigval, run_dir, resume) from None
    finally:
        signal.sigtimedwait({signal.SIGINT}, 0)  # this process's copy of a Ctrl-C the workers answered
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for s, handler in handlers.items():  # the agent's handlers would raise in whatever runs next
            signal.signal(s, handler)
        for logger, level in levels.items():
            logger.setLevel(level)
    outcome = results[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def check_devices(device: str, devices: int, gpus: int) -> None:
    """trainer.devices against the GPUs visible here, when training on CUDA."""
    if devices == 1 or device == "cpu" or (device == "auto" and gpus == 0):
        return
    if device.startswith("cuda:"):
        raise ConfigError(
            f"trainer.device={device} names one GPU, but trainer.devices={devices} needs one per "
            f"process; use trainer.device=cuda (processes take cuda:0 to cuda:{devices - 1}) or choose "
            "the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if devices > gpus:
        raise ConfigError(
            f"trainer.devices={devices} is more than the {gpus} GPU(s) visible here; use "
            f"trainer.devices=1..{max(gpus, 1)}, or trainer.device=cpu for {devices} CPU processes"
        )


def _worker(run: Callable[..., dict], settings, config: dict, run_dir: str, resume: str, logging_config: dict):
    """One process started by `launch`: its summary, or the DlcliError that stopped it, goes back to the launcher."""
    import signal

    def stop_now(signum, frame):  # before training starts there is nothing to save
        raise SystemExit(128 + signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop_now)  # until Trainer.fit takes them over
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C during start-up lands here
    where = place()
    _configure_logging(where[0] if where else 0, logging_config)
    try:
        return run(settings, config, Path(run_dir), resume)
    except Interrupted as stop:  # the launcher may be shutting down, no longer reading what comes back
        raise SystemExit(stop.exit_code) from None
    except DlcliError as exc:
        return exc  # every process meets the same user error; the launcher reports rank 0's once
    except Exception as exc:
        if not lost_contact(exc) or os.environ.get("DLCLI_DEBUG"):
            traceback.print_exc()  # a bug: the launcher's line points here
        raise SystemExit(1) from None
    finally:
        leave()
        # on its way out: the launcher's SIGTERM to the others, once one has died, would only interrupt the
        # exit (in an atexit callback, with a traceback) and not change how it ends
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)


def leave() -> None:
    """Leave the process group, as torch asks before a process exits (its threads would abort otherwise)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        import gc

        # DistributedDataParallel's reducer holds the group too, and on rank 0 it outlives run_training: the
        # first import of matplotlib (the plots) leaves reference cycles, pyparsing's exceptions with their
        # tracebacks, that keep run_training's frame alive until a collection happens to run. Collected here,
        # the group goes with destroy_process_group, whose gloo threads are then joined while the
        # interpreter is whole (see join).
        gc.collect()
        dist.destroy_process_group()


def _configure_logging(rank_: int, logging_config: dict) -> None:
    """Rank 0 logs as the launching process does (console and the run's log file); the others only warnings."""
    import logging.config

    if rank_ == 0:
        logging.config.dictConfig(logging_config)
    else:
        logging.basicConfig(level=logging.WARNING, format=f"[rank {rank_}] %(message)s", force=True)


def lost_contact(exc: BaseException) -> bool:
    """Whether `exc` is a collective operation failing because another process is gone."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(k in text for k in ("gloo", "NCCL", "Connection closed by peer"))


def lost_contact_line(exc: BaseException) -> str:
    return (
        f"rank {rank()} lost contact with the other processes ({first_line(exc)}); another process ended or "
        "the network failed; after fixing the cause, continue with trainer.resume=auto and the same hydra.run.dir"
    )


def failure_line(failures: dict, resume: str, run_dir: Path) -> str:
    """One line for processes that died: the one killed by a signal, else the first to fail."""
    import signal

    killed = sorted((r, f) for r, f in failures.items() if f.exitcode < 0)
    r, f = killed[0] if killed else min(failures.items(), key=lambda item: (item[1].timestamp, item[0]))
    if f.exitcode > 0:  # an error, reported by the process itself above: resuming would meet it again
        return (
            f"process rank {r} (pid {f.pid}) failed with exit code {f.exitcode} (its error is above); the other "
            "processes were stopped"
        )
    what = (
        f"process rank {r} (pid {f.pid}) was killed by {signal.Signals(-f.exitcode).name}; the other processes "
        "were stopped"
    )
    if last_checkpoint(run_dir).exists():
        return f"{what}; continue from the last checkpoint with: {resume}"
    return f"{what} before the first checkpoint; start again with the same command"


def _interrupted(signum: int, run_dir: Path, resume: str) -> Interrupted:
    """The Interrupted error for a signal the launcher received: where last.pt stopped."""
    import torch

    last = last_checkpoint(run_dir)
    if not last.exists():  # stopped while starting: no checkpoint, nothing to resume
        return Interrupted(int(signum), 0, 0, saved=False)
    state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    return Interrupted(int(signum), state.get("epoch", 0), state.get("step", 0), resume)
