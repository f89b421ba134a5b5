"""Each list of choices is defined once, in code, and everything else uses it; where YAML comments,
help texts and the README spell a list out for the reader, this module checks them against it."""

import ast
import json
import re
from pathlib import Path

import pytest

import dlcli.configs
from dlcli.cli import COMMANDS, PLAIN
from dlcli.data.bundle import POLICY_TRANSFORMS
from dlcli.layout import BEST, CHECKPOINTS, LAST
from dlcli.models import ACTIVATION_LAYERS, WEIGHT_FILLS
from dlcli.plots import METRIC_LABELS
from dlcli.settings import (
    ACTIVATIONS,
    CELLS,
    DEVICES,
    INITS,
    MONITORS,
    POLICIES,
    POOLINGS,
    SAMPLERS,
    SCHEMAS,
    SEQUENCES,
    STORAGES,
    TOY_SETS,
)
from dlcli.sweeps import METRICS

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(dlcli.configs.__path__[0])
OPTIONS = {group.name: sorted(p.stem for p in group.glob("*.yaml")) for group in CONFIGS.iterdir() if group.is_dir()}
LISTS = {
    "model.activation": ACTIVATIONS,
    "model.init": INITS,
    "model.pooling": POOLINGS,
    "model.cell": CELLS,
    "data.sequence": SEQUENCES,
    "data.name of toy": TOY_SETS,
    "trainer.device": DEVICES,
    "trainer.monitor": MONITORS,
    "data.storage": STORAGES,
    "data.sampler": SAMPLERS,
    "data.policy": POLICIES,
    **{f"{group}=": tuple(OPTIONS[group]) for group in SCHEMAS if group != "trainer"},
}
# every name a list may sit beside in a sentence: a run of such names holding a stale one fails
KNOWN = {name for names in LISTS.values() for name in names} | set(OPTIONS) | set(COMMANDS)
TEXTS = sorted(CONFIGS.rglob("*.yaml")) + [REPO / "README.md", REPO / "CONTRIBUTING.md"]
PIPES = re.compile(r"[A-Za-z_][\w:]*(?:[ \t]*\|[ \t]*[A-Za-z_][\w:]*)+")  # relu | tanh, auto|cpu
TICKS = re.compile(
    r"`[\w:]+`(?:\s\([^)`]*\))?(?:,?\s+(?:or\s+)?`[\w:]+`(?:\s\([^)`]*\))?)+"
)  # `adamw` (default), `sgd`


def runs(text: str) -> list[list[str]]:
    found = [run.replace(" ", "").split("|") for run in PIPES.findall(text)]
    return found + [re.findall(r"`([\w:]+)`", run) for run in TICKS.findall(text)]


def test_the_builders_cover_exactly_the_choices_the_settings_accept():
    assert tuple(ACTIVATION_LAYERS) == ACTIVATIONS
    assert ("default", *WEIGHT_FILLS) == INITS
    for group, options in SCHEMAS.items():  # an option is a schema and a YAML file (scheduler=none: no schema)
        assert set(options) <= set(OPTIONS[group]), group
    assert tuple(METRIC_LABELS) == METRICS
    assert ("none", *POLICY_TRANSFORMS) == POLICIES


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: str(p.relative_to(REPO if REPO in p.parents else CONFIGS)))
def test_every_list_written_out_for_the_reader_is_the_list_in_the_code(path):
    """A comment or README line naming three or more of a list's choices (both of a pair) names all of
    them, and no name that is not a choice: a choice added, renamed or dropped in the code fails here.
    Fewer is prose about some of them ("an image model (`lenet`, `alexnet`)")."""
    for run in runs(path.read_text()):
        for key, names in LISTS.items():
            if len(set(run) & set(names)) >= min(3, len(names)):
                assert set(names) <= set(run), f"{path.name}: {' | '.join(run)} misses {set(names) - set(run)} ({key})"
                assert set(run) <= KNOWN, f"{path.name}: {' | '.join(run)} names {set(run) - KNOWN}, no choice"


def test_the_readme_table_lists_each_group_s_options():
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", (REPO / "README.md").read_text(), re.M)
    table = {group: sorted(re.findall(r"`(\w+)`", cell)) for group, cell in rows if group in OPTIONS}
    assert table == {group: OPTIONS[group] for group in table} and set(table) >= set(SCHEMAS)


def test_the_commands_are_the_table_in_cli_and_the_command_configs():
    configs = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert set(COMMANDS) - PLAIN == configs
    blocks = "\n".join(re.findall(r"^```\w*\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S))
    readme = set(re.findall(r"^\s*dlcli ([a-z][\w-]*)", blocks, re.M))
    assert readme <= set(COMMANDS), readme - set(COMMANDS)


def test_checkpoint_names_are_written_once():
    """dlcli's code names the checkpoint files through dlcli.layout alone; texts name only those files."""
    for path in sorted((REPO / "dlcli").rglob("*.py")):
        if path.name == "layout.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            ast.get_docstring(node, clean=False)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value not in docstrings:
                assert not re.search(rf"\b({LAST}|{BEST})\b|\b{CHECKPOINTS}/", node.value), f"{path}: {node.value!r}"
    for path in TEXTS:
        named = set(re.findall(rf"{CHECKPOINTS}/([\w.]+\.pt)", path.read_text()))
        assert named <= {LAST, BEST}, f"{path}: {named}"


def test_a_run_summary_holds_every_metric_report_sorts_by(toy_checkpoint):
    summary = json.loads((toy_checkpoint.parents[1] / "summary.json").read_text())
    assert set(METRICS) <= set(summary)
    readme = set(re.findall(r"--metric[ =](\w+)", (REPO / "README.md").read_text()))
    assert readme <= set(METRICS)
