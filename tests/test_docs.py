"""The documentation cannot go stale: the generated reference is what the code says, it lists every key
a composed config holds, and every `dlcli ...` command in README.md and docs/ composes (or, marked so,
fails in one line)."""

import importlib.util
import itertools
import re
import shlex
import subprocess
from dataclasses import dataclass

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from conftest import REPO, dlcli_env, run_in_process
from dlcli.cli import COMMANDS, PLAIN
from dlcli.errors import CheckpointError, DlcliError
from dlcli.settings import load_settings


def load_reference():
    spec = importlib.util.spec_from_file_location("reference", REPO / "scripts" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = load_reference()
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
# before a fence: every dlcli command of the block is meant to fail
FAILS = "<!-- fails -->"
# a command followed in its block by the line it prints, `dlcli: error: ...`, is meant to fail with that line
ERROR = "dlcli: error:"
# the shell lines of a block that make the files its commands read (a config folder), run before them
MAKES_FILES = ("mkdir ", "printf ", "touch ")
# the commands whose config is train's: their values are checked as dlcli train checks them
TRAIN_LIKE = {"train", "summary", "gradcheck"}


# --- the generated reference ---------------------------------------------------------------------------


def test_reference_pages_are_what_the_code_says():
    for path, text in reference.pages().items():
        assert path.is_file() and path.read_text() == text, (
            f"{path.relative_to(REPO)} is not what the code says: run python scripts/reference.py"
        )


def config_leaves(node, prefix: str = "") -> list[str]:
    """The dotted keys of a composed config that hold values (a list is one value), as --cfg job prints them."""
    if not isinstance(node, dict):
        return [prefix]
    return [leaf for key, value in node.items() for leaf in config_leaves(value, f"{prefix}.{key}" if prefix else key)]


def sections(page: str) -> dict[str, str]:
    """The reference page's text under each ### heading."""
    parts = re.split(r"^### (.+)$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.slow
def test_reference_lists_every_key_of_every_option():
    listed = sections((reference.REFERENCE / "configuration.md").read_text())
    missing = []
    with initialize_config_module("dlcli.configs", version_base="1.3"):
        for group in reference.GROUPS:
            for option in reference.options_of(group):
                composed = OmegaConf.to_container(compose("train", overrides=[f"{group}={option}"])[group])
                section = listed.get(f"{group}={option}", "")
                missing += [f"{group}={option}: {k}" for k in config_leaves(composed, group) if f"`{k}`" not in section]
        for command in ("eval", "predict", "export", "gradcheck"):
            composed = OmegaConf.to_container(compose(command))
            own = {k: v for k, v in composed.items() if k not in reference.GROUPS and k != "hydra"}
            section = listed.get(f"dlcli {command}", "")
            missing += [f"dlcli {command}: {k}" for k in config_leaves(own) if f"`{k}`" not in section]
    assert not missing, f"keys of the composed configs missing from the reference: {missing}"


# --- the documented commands -----------------------------------------------------------------------------


@dataclass
class Command:
    args: list[str]  # after `dlcli`
    where: str  # page:line, for the message
    fails: bool
    shown: str | None  # the error line the page shows it printing
    setup: tuple[str, ...]  # shell lines of its block that make files it reads


def documented_commands() -> list[Command]:
    found = []
    for page in PAGES:
        name = str(page.relative_to(REPO))
        for marked, block in fenced_blocks(page.read_text()):
            setup = tuple(line for _, line in block if line.startswith(MAKES_FILES))
            for i, (number, line) in enumerate(block):
                args = dlcli_args(line)
                if args is None:
                    continue
                after = block[i + 1][1] if i + 1 < len(block) else ""
                shown = after if after.startswith(ERROR) else None
                found.append(Command(args, f"{name}:{number}", marked or shown is not None, shown, setup))
    return found


def fenced_blocks(text: str) -> list[tuple[bool, list[tuple[int, str]]]]:
    """(marked as failing, [(line number, shell line)]) of each fenced shell block,
    continuation lines joined and a `$ ` prompt taken off."""
    blocks, lines = [], text.splitlines()
    inside, language, marked, body = False, "", False, []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if not inside:
                language = stripped[3:].strip()
                previous = next((p.strip() for p in reversed(lines[: number - 1]) if p.strip()), "")
                inside, marked, body = True, previous == FAILS, []
            else:
                inside = False
                if language in ("", "bash", "sh", "shell", "console", "text"):
                    blocks.append((marked, joined(body)))
            continue
        if inside:
            body.append((number, stripped))
    return blocks


def joined(body: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    carry: tuple[int, str] | None = None
    for number, line in body:
        if carry:
            number, line = carry[0], carry[1] + " " + line
        carry = (number, line[:-1]) if line.endswith("\\") else None
        if carry is None:
            out.append((number, line.removeprefix("$ ")))
    return out


def dlcli_args(line: str) -> list[str] | None:
    """The arguments after `dlcli` (or `python -m dlcli`, `torchrun ... -m dlcli`), comments dropped and
    <placeholders> given a stand-in; None for a line that is no dlcli command (output, pip, ...)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if words[:1] == ["dlcli"]:
        rest = words[1:]
    elif "-m" in words and words[words.index("-m") + 1 : words.index("-m") + 2] == ["dlcli"]:
        rest = words[words.index("-m") + 2 :]
    else:
        return None
    return [re.sub(r"<([\w-]+)>", r"\1", word) for word in rest]  # outputs/<run>/... -> outputs/run/...


COMMANDS_FOUND = documented_commands()
UNIQUE = {" ".join(c.args) + f" {c.fails} {c.shown} {c.setup}": c for c in reversed(COMMANDS_FOUND)}


def test_the_pages_document_commands():
    """The extraction finds the commands (a change that found none would pass every page)."""
    assert len(COMMANDS_FOUND) > 50
    assert any(c.fails for c in COMMANDS_FOUND)
    assert {c.args[0] for c in COMMANDS_FOUND if c.args} >= {"train", "eval", "predict", "export", "report"}


# the README's commands in the quick loop, the site's with the full suite (CI runs both)
@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=() if c.where.startswith("README") else pytest.mark.slow) for c in UNIQUE.values()],
    ids=lambda c: c.where,
)
def test_documented_command(command, tmp_path, cache_dir):
    env = dlcli_env(cache_dir)
    for line in command.setup:
        subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True)
    if command.fails:
        assert_fails_in_one_line(command, run_in_process(command.args, tmp_path, env))
        return
    for args in compositions(command.args):
        proc = run_in_process(args, tmp_path, env)
        assert proc.returncode == 0, f"{command.where}: dlcli {' '.join(args)} does not compose: {proc.stderr.strip()}"
        if args[0] in TRAIN_LIKE and "--cfg" in args:
            check_values(command, args, proc.stdout)


def compositions(args: list[str]) -> list[list[str]]:
    """What composes a documented command without running it: `--cfg job` (`--help` for a command with no
    config, or one already asking for help). Hydra refuses `-m` with `--cfg`, so a sweep is composed job by
    job, every value of each swept key at least once (not every combination: a key that composes with one
    value composes with the others)."""
    if not args or args[0] not in COMMANDS:
        return [args]
    if args[0] in PLAIN or {"--help", "-h", "--cfg", "-c"} & set(args):
        return [[args[0], "--help"]] if args[0] in PLAIN else [args]
    rest = [a for a in args[1:] if a not in ("-m", "--multirun")]
    if len(rest) == len(args) - 1:
        return [[args[0], *rest, "--cfg", "job", "--resolve"]]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in rest if "=" in a and not a.startswith("-")]
    options = [a for a in rest if a not in overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [text]
        for o, text in zip(parsed, overrides)
    ]
    jobs = max(len(v) for v in values)
    cycled = [list(itertools.islice(itertools.cycle(v), jobs)) for v in values]
    return [[args[0], *options, *job, "--cfg", "job", "--resolve"] for job in zip(*cycled)]


def check_values(command: Command, args: list[str], printed: str) -> None:
    """The composed config's values, checked as dlcli train checks them before any work; a checkpoint
    path the page only stands for (outputs/<run>/...) does not exist here, and is no error of the page."""
    try:
        load_settings(yaml.safe_load(printed))
    except CheckpointError as exc:
        assert "does not exist" in str(exc), f"{command.where}: dlcli {' '.join(args)}: {exc}"
    except DlcliError as exc:
        pytest.fail(f"{command.where}: dlcli {' '.join(args)} has a value dlcli refuses: {exc}")


def assert_fails_in_one_line(command: Command, proc) -> None:
    said = " ".join(command.args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, f"{command.where}: dlcli {said} is marked as failing but succeeded"
    assert "Traceback" not in proc.stderr and len(lines) == 1, (
        f"{command.where}: dlcli {said} failed, but not in one line: {proc.stderr[-2000:]}"
    )
    if command.shown:  # the page shows the line; `...` ends what it abbreviates
        shown = command.shown.split("...")[0].rstrip()
        assert lines[0].startswith(shown), f"{command.where}: the page shows {shown!r}, dlcli says {lines[0]!r}"
