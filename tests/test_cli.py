"""The dispatcher: commands, help, and that Hydra's command line works unchanged."""

import subprocess
import sys

from dlcli.cli import main


def test_no_arguments_and_help_list_the_commands(capsys):
    assert main([]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "eval" in out


def test_unknown_command_fails_with_the_list(capsys):
    assert main(["fit"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fit'" in err and "train, eval" in err


def test_help_does_not_import_torch():
    code = "import sys; from dlcli.cli import main; main(['--help']); print('torch' in sys.modules, 'hydra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_train_help_lists_config_groups(dlcli):
    proc = dlcli("train", "--help")
    assert proc.returncode == 0, proc.stderr
    for group in ("model:", "data:", "loss:", "regularization:", "optimizer:", "scheduler:", "trainer:"):
        assert group in proc.stdout
    assert "lenet" in proc.stdout and "alexnet" in proc.stdout and "cifar10" in proc.stdout


def test_cfg_job_prints_the_composed_config(dlcli):
    proc = dlcli("train", "model=lenet", "data=mnist", "optimizer.lr=0.2", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: lenet" in proc.stdout and "lr: 0.2" in proc.stdout


def test_config_dir_adds_a_users_own_option(dlcli, tmp_path):
    mine = tmp_path / "my_configs" / "model"
    mine.mkdir(parents=True)
    (mine / "tiny_mlp.yaml").write_text("name: mlp\ndepth: 1\nwidth: 8\nactivation: tanh\n")
    proc = dlcli("train", "--config-dir", str(tmp_path / "my_configs"), "model=tiny_mlp", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "width: 8" in proc.stdout and "activation: tanh" in proc.stdout
