"""The dispatcher: commands, help, and that Hydra's command line works unchanged."""

import subprocess
import sys

import pytest

from dlcli.cli import main
from dlcli.commands.eval import ACCEPTED


def test_no_arguments_and_help_list_the_commands(capsys):
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_unknown_command_fails_with_the_list(capsys):
    assert main(["fit"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fit'" in err and "train, lr-find, eval, report" in err


def test_help_does_not_import_torch():
    code = "import sys; from dlcli.cli import main; main(['--help']); print('torch' in sys.modules, 'hydra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


@pytest.mark.slow
def test_train_help_lists_config_groups(dlcli):
    proc = dlcli("train", "--help")
    assert proc.returncode == 0, proc.stderr
    for group in ("model:", "data:", "loss:", "regularization:", "optimizer:", "scheduler:", "trainer:"):
        assert group in proc.stdout
    assert "lenet" in proc.stdout and "alexnet" in proc.stdout and "cifar10" in proc.stdout


def test_cfg_job_prints_the_composed_config(dlcli):
    proc = dlcli("train", "model=lenet", "data=mnist", "optimizer.lr=0.2", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "_target_: dlcli.models.LeNet5" in proc.stdout and "lr: 0.2" in proc.stdout


def test_config_dir_adds_a_users_own_option(dlcli, tmp_path):
    mine = tmp_path / "my_configs" / "model"
    mine.mkdir(parents=True)
    (mine / "tiny_mlp.yaml").write_text("defaults: [mlp]\ndepth: 1\nwidth: 8\nactivation: tanh\n")
    proc = dlcli("train", "--config-dir", str(tmp_path / "my_configs"), "model=tiny_mlp", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "width: 8" in proc.stdout and "activation: tanh" in proc.stdout
    assert "dropout: 0.2" in proc.stdout  # what the file leaves out is the built-in mlp's


@pytest.mark.slow
def test_eval_help_lists_only_what_eval_uses(dlcli):
    proc = dlcli("eval", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint=PATH" in proc.stdout and "trainer.eval_batch_size" in proc.stdout
    options = proc.stdout.partition("== Options ==")[2]
    assert all(f"  {key}=" in options for key in ACCEPTED), options  # every key eval takes, bins=N too
    assert "optimizer" not in proc.stdout and "Configuration groups" not in proc.stdout


def test_bash_completion_completes_commands_groups_options_and_keys(tmp_path):
    """The script `dlcli train -sc install=bash` prints, driven the way bash drives it."""
    script = tmp_path / "complete.sh"
    script.write_text("""eval "$(dlcli train -sc install=bash)"
complete_line() {
  COMP_LINE="$1"; read -ra COMP_WORDS <<< "$1"
  if [[ "$1" == *" " ]]; then COMP_WORDS+=(""); fi
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_POINT=${#1}
  _dlcli_completion; echo "${COMPREPLY[*]}"
}
complete_line "dlcli tr"
complete_line "dlcli train model="
complete_line "dlcli train model=lenet optimizer.l"
complete_line "dlcli eval sp"
""")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "train",
        "model=alexnet model=custom model=lenet model=mlp model=resnet model=rnn",
        "optimizer.lr=",
        "split=",
    ]
