"""The package's shape: no import cycles (imports inside functions count too), commands above a
library that never imports them, a machine module that imports nothing of dlcli, and a start-up
that imports neither torch nor Hydra."""

import ast
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = REPO / "dlcli"
COMMANDS = "dlcli.commands"
# the entry points above the commands: the dispatcher and what it hands the command table to
ENTRY = {"dlcli.cli", "dlcli.completion", "dlcli.__main__"}


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, object]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path, known: set[str]) -> set[str]:
    """The dlcli modules a file imports, at its top or inside functions: `from dlcli.data import Loaded`
    is the package dlcli.data, `from dlcli import plots` the module dlcli.plots."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != "dlcli":
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = modules()
    known = set(paths)
    # a module imports its own package only where it names it: dlcli.data.cache -> dlcli.data is no edge
    return {name: imported(path, known) - {name} for name, path in paths.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_imports_inside_functions_and_finds_a_planted_cycle(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from dlcli.b import g\n")
    assert imported(tmp_path / "a.py", {"dlcli.b"}) == {"dlcli.b"}
    assert cycle({"dlcli.a": {"dlcli.b"}, "dlcli.b": {"dlcli.c"}, "dlcli.c": {"dlcli.a"}}) == [
        "dlcli.a",
        "dlcli.b",
        "dlcli.c",
        "dlcli.a",
    ]


def test_the_package_has_no_import_cycle():
    assert cycle(import_graph()) is None


def test_the_library_never_imports_a_command():
    upward = {
        (name, dep)
        for name, deps in import_graph().items()
        for dep in deps
        if dep.startswith(COMMANDS) and not name.startswith(COMMANDS) and name not in ENTRY
    }
    assert not upward


def test_the_machine_module_imports_nothing_of_dlcli_but_its_errors():
    # errors.py imports only the run folder's names, which import nothing: the floor every other module stands on
    assert import_graph()["dlcli.machine"] <= {"dlcli.errors"}
    assert import_graph()["dlcli.errors"] <= {"dlcli.layout"}
    assert import_graph()["dlcli.layout"] == set()


def test_help_imports_neither_torch_nor_hydra():
    code = (
        "import sys, contextlib, io\nfrom dlcli.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'hydra')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_a_checkpoint_from_before_the_move_evals_predicts_exports_and_resumes(dlcli, tmp_path):
    """tests/fixtures/premove_toy_mlp.pt was written before dlcli.data became a package: its config
    names dlcli.toy.load_toy, which now lives at dlcli.data.toy.load_toy."""
    import json
    import shutil

    import numpy as np
    import torch

    from conftest import FAST_TOY

    old = tmp_path / "old" / "checkpoints" / "last.pt"
    old.parent.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "fixtures" / "premove_toy_mlp.pt", old)
    assert torch.load(old, weights_only=True)["config"]["data"]["_target_"] == "dlcli.toy.load_toy"
    proc = dlcli("eval", f"checkpoint={old}", "hydra.run.dir=ev")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["acc"] == 0.44 and abs(report["loss"] - 1.08507) < 1e-5  # as the code before the move gave
    np.save(tmp_path / "points.npy", np.array([[0.5, -0.2], [-1.0, 0.3]], dtype=np.float32))
    proc = dlcli("predict", f"checkpoint={old}", "inputs=points.npy", "hydra.run.dir=pr")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "pr" / "predictions.csv").read_text().splitlines()) == 3
    proc = dlcli("export", f"checkpoint={old}", "format=torchscript", f"out={tmp_path / 'old.torchscript'}")
    assert proc.returncode == 0 and (tmp_path / "old.torchscript").is_file(), proc.stderr
    proc = dlcli("train", *FAST_TOY, "model.width=16", "trainer.epochs=3", f"trainer.resume={old}", "hydra.run.dir=re")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "re" / "summary.json").read_text())["epochs"] == 3


@pytest.mark.parametrize(
    "old,schema,keys",
    [
        ({"name": "none", "strength": 0.0, "l1_ratio": 0.5}, "none", {}),
        ({"name": "l1", "strength": 0.2, "l1_ratio": 0.5}, "l1", {"strength": 0.2}),
        ({"name": "l2", "strength": 0.3, "l1_ratio": 0.5}, "l2", {"strength": 0.3}),
        ({"name": "elastic", "strength": 0.4, "l1_ratio": 0.25}, "elastic", {"strength": 0.4, "l1_ratio": 0.25}),
    ],
)
def test_a_penalty_stored_by_name_is_rebuilt_by_its_target(old, schema, keys):
    """Before regularization named what it builds, checkpoints stored {name, strength, l1_ratio}."""
    import torch

    from dlcli.checkpoint import config_to_rebuild
    from dlcli.settings import SCHEMAS, load_settings

    state = torch.load(REPO / "tests" / "fixtures" / "premove_toy_mlp.pt", weights_only=True)
    state["config"]["regularization"] = old
    settings = load_settings(config_to_rebuild(state, "old.pt", []))
    assert settings.regularization == SCHEMAS["regularization"][schema](**keys)


def test_the_data_sources_import_each_other_not_the_face():
    """dlcli.data resolves its names lazily (so a path check answers before torch); a source module
    going through that face would hide a real dependency from the walk above."""
    inside = {name: deps for name, deps in import_graph().items() if name.startswith("dlcli.data.")}
    assert not [name for name, deps in inside.items() if "dlcli.data" in deps]
