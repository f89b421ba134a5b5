"""Bad input: one clear line, a non-zero exit, no traceback, and nothing that existed is touched."""

import hashlib
import json

import pytest

from conftest import FAST_TOY, assert_one_line_error


def snapshot(folder):
    return {p: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def keepsake(tmp_path):
    """A file from an earlier run that a failing command must leave alone."""
    old = tmp_path / "outputs" / "earlier" / "summary.json"
    old.parent.mkdir(parents=True)
    old.write_text('{"test_acc": 0.5}\n')
    return snapshot(tmp_path)


def test_unknown_group_option_lists_the_choices(dlcli, tmp_path, keepsake):
    proc = dlcli("train", "model=transformer")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Could not find 'model/transformer'" in proc.stderr
    assert all(name in proc.stderr for name in ("alexnet", "lenet", "mlp"))
    assert snapshot(tmp_path) == keepsake


def test_unknown_key_names_the_allowed_keys_without_hydras_plus_advice(dlcli, tmp_path, keepsake):
    proc = dlcli("train", "trainer.epoks=3")
    assert_one_line_error(proc, "trainer.epoks", "did you mean trainer.epochs?", "val_fraction")
    assert "+trainer" not in proc.stderr  # "+key=value" would only lead into a second error
    assert snapshot(tmp_path) == keepsake


def test_path_errors_are_answered_before_torch_is_imported(dlcli, tmp_path, keepsake):
    """A torch that refuses to import: the answer to a wrong path must not need it."""
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('torch was imported')\n")
    env = {"PYTHONPATH": str(tmp_path / "no_torch")}
    assert_one_line_error(dlcli("eval", "checkpoint=outputs/nope/best.pt", env=env), "does not exist")
    assert_one_line_error(dlcli("train", "trainer.resume=outputs/nope/last.pt", env=env), "does not exist")
    proc = dlcli("train", "data=mnist", f"data.root={tmp_path / 'nowhere'}", "data.download=false", env=env)
    assert_one_line_error(proc, "MNIST/raw")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optimizer.lr=-1", "optimizer.lr=-1 is invalid: a number > 0"),
        ("optimizer.lr=0", "optimizer.lr=0 is invalid"),
        ("model.depth=-2", "model.depth=-2 is invalid"),
        ("trainer.batch_size=0", "trainer.batch_size=0 is invalid"),
        ("model.activation=swish", "model.activation='swish' is invalid: choose one of sigmoid, tanh, relu"),
        ("model.width=[8,8,8]", "model.width=[8, 8, 8] is invalid: a list needs one width per hidden layer"),
        ("regularization=elastic regularization.strength=-0.5", "regularization.strength=-0.5 is invalid"),
        # regularization=none has no strength to set: a penalty the run would silently not apply
        (
            "regularization.strength=0.1",
            "option chosen has no keys; choose one that does first, e.g. regularization=l1|l2|elastic",
        ),
        ("trainer.device=gpu", "trainer.device='gpu' is invalid: auto, cpu, cuda or cuda:N"),
    ],
)
def test_invalid_value_is_one_line_naming_key_value_and_rule(dlcli, tmp_path, keepsake, override, needle):
    proc = dlcli("train", *override.split())
    assert_one_line_error(proc, needle)
    assert snapshot(tmp_path) == keepsake


@pytest.mark.slow
def test_missing_dataset_without_download_says_where_and_how(dlcli, tmp_path, keepsake):
    proc = dlcli("train", "data=mnist", f"data.root={tmp_path / 'nowhere'}", "data.download=false")
    assert_one_line_error(proc, str(tmp_path / "nowhere" / "MNIST" / "raw"), "train-images-idx3-ubyte", "data.root")
    assert snapshot(tmp_path) == keepsake


def test_missing_checkpoint(dlcli, tmp_path, keepsake):
    proc = dlcli("eval", "checkpoint=outputs/nope/best.pt")
    assert_one_line_error(proc, "outputs/nope/best.pt does not exist")
    assert snapshot(tmp_path) == keepsake


def test_eval_without_a_checkpoint(dlcli):
    assert_one_line_error(dlcli("eval"), "checkpoint is required")


@pytest.mark.slow
def test_corrupt_checkpoint(dlcli, tmp_path, keepsake):
    bad = tmp_path / "outputs" / "earlier" / "best.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    before = snapshot(tmp_path)
    proc = dlcli("eval", f"checkpoint={bad}")
    assert_one_line_error(proc, "is damaged or not a checkpoint")
    assert snapshot(tmp_path) == before


def test_a_file_that_is_no_checkpoint_at_all_says_so(tmp_path):
    from dlcli.checkpoint import load_checkpoint
    from dlcli.errors import CheckpointError

    (tmp_path / "flowers.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CheckpointError, match="is not a checkpoint .not a file torch.save wrote.; pass a .pt file"):
        load_checkpoint(tmp_path / "flowers.csv")


def test_resume_from_a_missing_checkpoint(dlcli, tmp_path, keepsake):
    proc = dlcli("train", *FAST_TOY, "trainer.resume=outputs/earlier/last.pt")
    assert_one_line_error(proc, "outputs/earlier/last.pt does not exist")
    assert snapshot(tmp_path) == keepsake


@pytest.mark.slow
def test_a_cnn_on_2d_points_is_refused(dlcli):
    assert_one_line_error(dlcli("train", "model=lenet", "data=toy"), "LeNet5 needs images", "use model=mlp")


@pytest.mark.slow
def test_diverging_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(dlcli, tmp_path):
    # one-cycle starts at lr/25, which ELU layers survive for a few epochs; lr itself blows them up
    run = [
        "train",
        *FAST_TOY,
        "trainer.epochs=6",
        "model.activation=elu",
        "model.depth=3",
        "optimizer=sgd",
        "optimizer.momentum=0",
        "optimizer.nesterov=false",
        "optimizer.lr=10",
        "scheduler=onecycle",
        "scheduler.pct_start=0.9",
        "hydra.run.dir=run",
        "trainer.device=cpu",
        "trainer.threads=2",
    ]  # the same numbers on any machine
    proc = dlcli(*run)
    assert_one_line_error(proc, "loss became", "at epoch", "step", "last good checkpoint")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and "loss became" in summary["reason"]
