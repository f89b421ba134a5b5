"""Thirty-odd bad inputs, each: one line on stderr, a non-zero exit, no traceback, nothing changed.

Plus checkpoints that must be refused: a crafted pickle (that must not run), a damaged file,
another architecture, another number of classes, a newer format.
"""

import hashlib
import os
import resource
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import FAST_TOY, assert_one_line_error

CASES = [
    # unknown groups, options and keys
    (["train", "model=transformer"], "choose one of: alexnet, custom, lenet, mlp, resnet, rnn"),
    (
        ["train", "data=imagenet"],
        "choose one of: arrays, cifar10, csv, custom, fashion_mnist, image_folder, mnist, toy",
    ),
    (["train", "optimizer=lamb"], "Could not find 'optimizer/lamb'"),
    (["train", "scheduler=warmup"], "Could not find 'scheduler/warmup'"),
    (["train", "trainer.epoks=3"], "trainer.epoks is not a key of trainer; did you mean trainer.epochs?"),
    (
        ["train", "model.heads=4"],
        "model.heads is not a key of model; the keys of this model option are: _target_, depth",
    ),
    (["train", "trainer.foo=1"], "the keys of this trainer option are: epochs, batch_size"),
    (["train", "modle=lenet"], "modle is not a config group or key; did you mean model?"),
    (
        ["train", "optimizer=sgd", "optimizer.betas=[0.9,0.99]"],
        "the keys of this optimizer option are: _target_, lr, momentum, nesterov, weight_decay",
    ),
    (["train", "data.name=mnist"], "choose a dataset with data=mnist"),
    (["eval", "checkpoint=x.pt", "+model=alexnet"], "model is not used by dlcli eval"),
    (["eval", "checkpoint=x.pt", "+optimizer.lr=5"], "optimizer is not used by dlcli eval"),
    (["eval", "checkpoint=x.pt", "+trainer.epochs=99"], "trainer.epochs is not used by dlcli eval"),
    (["eval", "checkpoint=x.pt", "model.depth=3"], "it accepts: checkpoint, split, allow, data.root, trainer.device"),
    (["train", "-sc", "install=fish"], "the shell completion of dlcli is for bash"),
    (["train", "optimizer.lr=[1,"], "no viable alternative"),
    (["fit"], "unknown command 'fit'"),
    (["trian"], "did you mean train?"),
    # wrong types
    (["train", "optimizer.lr=fast"], "optimizer.lr='fast' is invalid: a number > 0, or auto"),
    (["train", "trainer.epochs=2.5"], "trainer.epochs=2.5 is invalid: expected an integer"),
    (["train", "trainer.batch_size=true"], "trainer.batch_size=True is invalid"),
    (["train", "model.width=[a,b]"], "model.width=['a', 'b'] is invalid"),
    (["train", "model.batch_norm=maybe"], "model.batch_norm='maybe' is invalid"),
    # out of range
    (["train", "optimizer.lr=-1"], "optimizer.lr=-1 is invalid: a number > 0"),
    (["train", "optimizer.lr=0"], "optimizer.lr=0 is invalid"),
    (["train", "trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["train", "model.depth=-1"], "model.depth=-1 is invalid"),
    (["train", "model.dropout=1"], "model.dropout=1 is invalid"),
    (["train", "regularization=l2", "regularization.strength=-1"], "regularization.strength=-1 is invalid"),
    (["train", "trainer.val_fraction=0"], "trainer.val_fraction=0 is invalid"),
    (["train", "trainer.precision=8"], "trainer.precision='8' is invalid"),
    (["train", "trainer.monitor=test_acc"], "trainer.monitor='test_acc' is invalid"),
    (["train", "data.name=swirl"], "data.name='swirl' is invalid"),
    # empty and huge values
    (["train", "optimizer.lr="], "optimizer.lr='' is invalid"),
    (["train", "model.activation="], "model.activation='' is invalid"),
    (["train", "trainer.epochs=1000000000"], "trainer.epochs=1000000000 is invalid"),
    (["train", "model.width=100000000"], "model.width=100000000 is invalid"),
    (["train", "trainer.batch_size=99999999999"], "trainer.batch_size=99999999999 is invalid"),
    # paths that do not exist or cannot be written
    (["train", "data=mnist", "data.root=/nonexistent/data", "data.download=false"], "/nonexistent/data/MNIST/raw"),
    (["train", "trainer.resume=/nonexistent/last.pt"], "/nonexistent/last.pt does not exist"),
    (["eval", "checkpoint=/nonexistent/best.pt"], "/nonexistent/best.pt does not exist"),
    (["eval", "checkpoint=outputs"], "is a folder"),
    (["report", "/nonexistent/sweep"], "is not a folder"),
    (["train", "hydra.run.dir=/proc/nope/run"], "choose a writable folder"),
    # conflicting options
    (["train", "model=lenet", "data=toy"], "LeNet5 needs images"),
    (["train", "model=custom"], "model._target_ is required"),
    (["train", "model=custom", "model._target_=no_such.Net"], "model._target_=no_such.Net cannot be imported"),
    (["train", "optimizer._target_=torch.optim.Lamb"], "optimizer._target_=torch.optim.Lamb cannot be imported"),
    (["train", "optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"], "Nesterov needs"),
    (["train", "model.depth=3", "model.width=[64,32]"], "a list needs one width per hidden layer"),
    (["train", "-m", "optimizer.lr=0.1", "--cfg", "job"], "Only one of --run, --multirun, --cfg"),
    (["eval", "checkpoint=x.pt", "split=train"], "split='train' is invalid: test or val"),
    (["eval", "checkpoint=x.pt", "bins=0"], "bins=0 is invalid: an integer from 1 to 100: the equal-width"),
    (["eval", "checkpoint=x.pt", "bins=ten"], "bins='ten' is invalid: an integer from 1 to 100"),
    (["eval", "checkpoint=x.pt", "top_losses=1.5"], "top_losses=1.5 is invalid: an integer from 0 to 100"),
]
if not torch.cuda.is_available():
    CASES.append((["train", "trainer.device=cuda"], "no CUDA GPU is visible"))
if shutil.which("srun") is None:
    CASES.append((["train", "-m", "hydra/launcher=slurm", "trainer.epochs=1"], "SLURM is not available here"))


def snapshot(folder):
    return {p: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def workdir(tmp_path):
    """A folder with an earlier run in it that no failing command may touch."""
    old = tmp_path / "outputs" / "earlier"
    (old / "checkpoints").mkdir(parents=True)
    (old / "summary.json").write_text('{"test_acc": 0.5}\n')
    (old / "checkpoints" / "last.pt").write_bytes(b"an earlier checkpoint")
    return tmp_path


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_changes_nothing(dlcli, workdir, args, needle):
    before = snapshot(workdir)
    assert_one_line_error(dlcli(*args, cwd=workdir), needle)
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_what_was_there(dlcli, workdir, cache_dir):
    """RLIMIT_FSIZE makes every write past 200 kB fail as a full disk would (Python ignores SIGXFSZ)."""
    before = snapshot(workdir)

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    env = {**os.environ, "DLCLI_CACHE": str(cache_dir)}
    env.pop("DLCLI_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "dlcli.cli", "train", *FAST_TOY, "model.width=512"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
    )
    assert_one_line_error(proc, "could not write", "best.pt", "File too large")
    after = snapshot(workdir)
    assert {p: h for p, h in after.items() if p in before} == before
    assert not [p for p in after if p.name.endswith(".tmp")]  # no half-written files left behind


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(dlcli, tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": 1, "dlcli_version": "0.1.0", "config": {}, "epoch": 1, "model": Payload(marker)}, bad)
    proc = dlcli("eval", f"checkpoint={bad}")
    assert_one_line_error(proc, "was refused", "could run code")
    assert not marker.exists()
    proc = dlcli("train", *FAST_TOY, f"trainer.resume={bad}")
    assert_one_line_error(proc, "was refused")
    assert not marker.exists()


@pytest.mark.slow
def test_a_truncated_checkpoint_is_one_line(dlcli, tmp_path, toy_checkpoint):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(toy_checkpoint.read_bytes()[:5000])
    assert_one_line_error(dlcli("eval", f"checkpoint={cut}"), "is damaged or not a checkpoint")


@pytest.mark.slow
def test_a_checkpoint_of_another_architecture_or_class_count_is_one_line(dlcli, toy_checkpoint):
    proc = dlcli("train", *FAST_TOY, "model.width=16", f"trainer.resume={toy_checkpoint}")
    assert_one_line_error(proc, "does not fit this model", "size mismatch")
    proc = dlcli("train", *FAST_TOY, "data.name=moons", f"trainer.resume={toy_checkpoint}")
    assert_one_line_error(proc, "does not fit this model")


@pytest.mark.slow
def test_a_checkpoint_from_a_newer_dlcli_is_one_line(dlcli, tmp_path, toy_checkpoint):
    state = torch.load(toy_checkpoint, weights_only=True)
    state["format"], state["dlcli_version"] = 99, "9.0.0"
    newer = tmp_path / "newer.pt"
    torch.save(state, newer)
    assert_one_line_error(dlcli("eval", f"checkpoint={newer}"), "written by dlcli 9.0.0", "upgrade dlcli")


@pytest.mark.slow
def test_a_format_2_checkpoint_is_refused_by_eval_and_resume(dlcli, tmp_path, toy_checkpoint):
    """Format 2 held dlcli's own optimizers and configs without _target_: neither can be rebuilt."""
    state = torch.load(toy_checkpoint, weights_only=True)
    state["format"] = 2
    old = tmp_path / "old.pt"
    torch.save(state, old)
    before = old.read_bytes()
    assert_one_line_error(dlcli("eval", f"checkpoint={old}"), "in format 2", "train it again")
    assert_one_line_error(dlcli("train", *FAST_TOY, f"trainer.resume={old}"), "in format 2", "cannot resume")
    assert old.read_bytes() == before


@pytest.mark.slow
def test_resuming_with_another_optimizer_or_schedule_is_one_line(dlcli, toy_checkpoint):
    proc = dlcli("train", *FAST_TOY, "optimizer=sgd", f"trainer.resume={toy_checkpoint}")
    assert_one_line_error(proc, "optimizer is torch.optim.AdamW, not this run's torch.optim.SGD")
    proc = dlcli("train", *FAST_TOY, "scheduler=step", f"trainer.resume={toy_checkpoint}")
    assert_one_line_error(
        proc,
        "lr schedule is torch.optim.lr_scheduler.CosineAnnealingLR, not this run's torch.optim.lr_scheduler.StepLR",
    )
