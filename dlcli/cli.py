"""The `dlcli` command: a thin dispatcher that hands everything after the subcommand to Hydra.

It imports neither torch nor Hydra itself, so `dlcli --help` answers at once.
"""

import difflib
import importlib
import os
import re
import shutil
import signal
import sys

from dlcli import __version__, interrupts
from dlcli.completion import shell_completion
from dlcli.errors import DlcliError
from dlcli.layout import EXAMPLE

COMMANDS = {
    "train": ("dlcli.commands.train", "train a model:  dlcli train model=lenet data=mnist optimizer.lr=0.1"),
    "lr-find": (
        "dlcli.commands.lr_find",
        "suggest a learning rate (range test):  dlcli lr-find model=lenet data=mnist",
    ),
    "eval": ("dlcli.commands.eval", f"evaluate a checkpoint:  dlcli eval checkpoint={EXAMPLE}"),
    "report": ("dlcli.commands.report", "summarize sweeps and runs:  dlcli report outputs/multirun/<date>/<time>"),
    "predict": (
        "dlcli.commands.predict",
        f"classify new inputs:  dlcli predict checkpoint={EXAMPLE} inputs=DIR",
    ),
    "export": (
        "dlcli.commands.export",
        f"ONNX or TorchScript:  dlcli export checkpoint={EXAMPLE} format=onnx",
    ),
    "gradcheck": (
        "dlcli.commands.gradcheck",
        "backprop vs numerical gradients:  dlcli gradcheck model=lenet data=mnist",
    ),
    "summary": ("dlcli.commands.summary", "the model as a table:  dlcli summary model=lenet data=mnist"),
}
PLAIN = {"report"}  # commands with their own argparse line rather than Hydra's

USAGE = f"""usage: dlcli <command> [hydra overrides and options]

dlcli {__version__}: train neural networks from Hydra YAML configs.

commands:
{chr(10).join(f"  {name:<10}{text}" for name, (_, text) in COMMANDS.items())}

All but report take Hydra's command line: key=value overrides, group=option choices,
-m/--multirun for sweeps, --cfg job to print the config, --help for its config groups.
  dlcli train --help
  dlcli train -m optimizer.lr=0.1,0.01 optimizer.weight_decay=0,1e-4
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"dlcli {__version__}")
        return 0
    if args[0] not in COMMANDS:
        near = difflib.get_close_matches(args[0], COMMANDS, n=1)
        print(
            f"dlcli: unknown command {args[0]!r}; the commands are: {', '.join(COMMANDS)} "
            + (f"(did you mean {near[0]}?)" if near else "(see dlcli --help)"),
            file=sys.stderr,
        )
        return 2
    if args[0] not in PLAIN and ({"-sc", "--shell-completion"} & set(args[1:])):
        return shell_completion(args[0], args[1:], {name: module for name, (module, _) in COMMANDS.items()}, PLAIN)
    with interrupts.guard():
        try:
            return _run(args)
        except KeyboardInterrupt as exc:  # outside a task's own handling: imports, Hydra composing, report
            print(interrupts.interrupted_line(interrupts.signum_of(exc)), file=sys.stderr, flush=True)
            interrupts.said()
            code = interrupts.exit_code(exc)
        except SystemExit as exc:  # a task's own way out, after a signal or not
            if exc.code not in (128 + signal.SIGINT, 128 + signal.SIGTERM) or not interrupts.heard():
                raise
            code = exc.code
        if interrupts.heard():
            interrupts.exit_now(code)
        return code


def _run(args: list[str]) -> int:
    module = importlib.import_module(COMMANDS[args[0]][0])
    if args[0] in PLAIN:
        return module.main(args[1:])
    unused = _unused_by_eval(args[1:]) if args[0] == "eval" else None
    if unused:  # before Hydra: composing +model=alexnet would fail on the model's own defaults first
        print(f"dlcli: error: {unused}", file=sys.stderr)
        return 2
    launching = {"-m", "--multirun"} & set(args) and not {"-c", "--cfg", "-i", "--info", "--help", "-h"} & set(args)
    if launching and int(os.environ.get("WORLD_SIZE", 1)) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        if os.environ.get("RANK", "0") == "0":  # the same line from every process would say nothing more
            print(f"dlcli: error: {NO_SWEEP_UNDER_TORCHRUN}", file=sys.stderr)
        return 2
    slurm = any(a in ("hydra/launcher=slurm", "hydra/launcher=submitit_slurm") for a in args)
    if launching and slurm and not shutil.which("srun"):
        print(f"dlcli: error: {NO_SLURM}", file=sys.stderr)  # before Hydra makes the sweep folder
        return 2
    # let Hydra's own errors (unknown option or key, bad override syntax) reach us, to print them as one line
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    if "WORLD_SIZE" in os.environ and not os.environ.get("DLCLI_DEBUG"):
        # a process of torchrun's: c10d's C++ log prints a stack trace per retry while the others
        # are not there yet; the errors that end the run come back as exceptions, given in one line
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    # Hydra reads sys.argv itself; make it look as if `dlcli <command>` were the program
    sys.argv = [f"dlcli {args[0]}", *map(home_expanded, args[1:])]
    try:
        module.main()
    except BrokenPipeError:  # `dlcli train --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Exception as exc:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if os.environ.get("DLCLI_DEBUG"):
            raise
        if _is_missing_slurm(exc):  # a SLURM launcher chosen in a config file rather than on the command line
            print(f"dlcli: error: {NO_SLURM}", file=sys.stderr)
            return 2
        # Hydra refusing the command line or the config, or the run folder it could not make
        if not isinstance(exc, (HydraException, OmegaConfBaseException, ValueError, OSError, DlcliError)):
            raise
        from dlcli.settings import composition_error

        message = (
            unreadable_override(exc, args[0], args[1:])
            or unknown_key_message(exc, args[0], args[1:])
            or composition_error(exc)
            or hydra_message(exc)
        )
        print(f"dlcli: error: {message}", file=sys.stderr)
        return 2
    return 0


NO_SWEEP_UNDER_TORCHRUN = (
    "-m sweeps do not run under torchrun, whose processes would each start the sweep; run the "
    "sweep with dlcli itself and give each job its processes: dlcli train -m trainer.devices=N ..."
)
NO_SLURM = (
    "SLURM is not available here (no srun command); use hydra/launcher=submitit_local to try the same "
    "submitit path on this machine, or submit from a SLURM login node"
)


def _unused_by_eval(overrides: list[str]) -> str | None:
    from dlcli.commands.eval import ACCEPTED, unused_key_message

    for item in overrides:
        key = item.partition("=")[0].lstrip("+~")
        if "=" in item and not item.startswith("-") and not key.startswith("hydra") and key not in ACCEPTED:
            return unused_key_message(key)
    return None


def home_expanded(arg: str) -> str:
    """`key=~/path` with the home folder put in, as a shell does for an assignment: Hydra's override
    grammar has no `~`, and a bash word `data.root=~/x` is no assignment, so nothing else expands it."""
    key, eq, value = arg.partition("=")
    if not eq or arg.startswith("-") or not (value == "~" or value.startswith("~/")) or "," in value:
        return arg
    path = os.path.expanduser(value)
    quote = "'" if "'" not in path else '"'
    return arg if quote in path else f"{key}={quote}{path}{quote}"  # quoted: a home with spaces still parses


# Hydra's options that take the next word as their value
_OPTION_VALUES = {
    "-c",
    "--cfg",
    "-p",
    "--package",
    "-cn",
    "--config-name",
    "-cp",
    "--config-path",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
}


def unreadable_override(exc: BaseException, command: str, args: list[str]) -> str | None:
    """dlcli's line for the first word Hydra's override grammar cannot read, with the quoting that
    works; Hydra's own names the grammar's token and a web page, not the fix."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    if not isinstance(exc, OverrideParseException):
        return None
    parser = OverridesParser.create()
    words = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in _OPTION_VALUES)]
    for i, word in enumerate(words):
        try:
            parser.parse_override(word)
            continue
        except HydraException as refused:
            lexer = "token recognition error" in str(refused)  # a character, not the syntax of a list or sweep
        key, eq, value = word.partition("=")
        if not eq and i > 0 and "=" in words[i - 1]:  # `inputs=my photos/`: the shell split one value in two
            joined_key, _, start = words[i - 1].partition("=")
            return (
                f"{word!r} is not an override (key=value): the shell split a value with a space in it; quote "
                f"the whole value, once for Hydra and once for the shell: \"{joined_key}='{start} {word}'\""
            )
        if eq and not lexer:
            return None  # `optimizer.lr=[1,`: Hydra's own words say where the syntax breaks
        if not eq:
            return f"{word!r} is not an override: write key=value or group=option (dlcli {command} --help lists them)"
        return (
            f"the value of {key} cannot be read unquoted ({value!r} holds a character that Hydra's override "
            f"grammar takes only in quotes, such as a non-ASCII letter); quote it, once for Hydra and once "
            f"for the shell: \"{key}='{value}'\""
        )
    return None


def _is_missing_slurm(exc: BaseException) -> bool:
    # submitit's SLURM executor refuses to start where there is no srun, deep inside Hydra's launcher
    return isinstance(exc, RuntimeError) and "srun" in str(exc) and shutil.which("srun") is None


def unknown_key_message(exc: BaseException, command: str, overrides: list[str]) -> str | None:
    """dlcli's line for an override of a key or group that does not exist: the keys that do, and the
    nearest one. Hydra's own advice ("use +key=value") would only lead to a second error."""
    match = re.match(r"Could not override '([^']+)'", str(exc))
    if match is None:
        return None
    key = match.group(1)
    node = _compose_without(command, [o for o in overrides if not o.lstrip("+~").startswith(key + "=")])
    if not isinstance(node, dict):
        return None
    path = []  # the longest part of the key that exists
    for part in key.split(".")[:-1]:
        if not isinstance(node.get(part), dict):
            break
        node, path = node[part], [*path, part]
    name = key.split(".")[len(path)]
    allowed = [k for k in node if k not in ("hydra", "experiment", "hparams_search")]
    near = difflib.get_close_matches(name, allowed, n=1)
    prefix = "".join(p + "." for p in path)
    hint = f"did you mean {prefix}{near[0]}? " if near else ""
    if len(path) == 1 and allowed == ["_target_"]:  # logger=none, scheduler=none, regularization=none
        having = _options_with(path[0], name)
        return (
            f"{key} is not a key: the {path[0]} option chosen has no keys; choose one that does first, e.g. "
            f"{path[0]}={'|'.join(having) if having else '<option>'} {key}=..."
        )
    if len(path) > 1:  # a section inside an option, e.g. trainer.early_stopping
        return f"{key} is not a key of {prefix[:-1]}; {hint}its keys are: {', '.join(allowed)}"
    if path:
        return f"{key} is not a key of {prefix[:-1]}; {hint}the keys of this {path[0]} option are: {', '.join(allowed)}"
    return f"{key} is not a config group or key; {hint}the groups and keys are: {', '.join(allowed)}"


def _options_with(group: str, key: str) -> list[str]:
    """The options of a group whose schema has `key`."""
    import dataclasses

    from dlcli.settings import SCHEMAS

    options = SCHEMAS.get(group, {})
    return [name for name, cls in options.items() if key in {f.name for f in dataclasses.fields(cls)}]


def _compose_without(command: str, overrides: list[str]) -> dict | None:
    """The command's config composed from the other overrides (None when that fails as well)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import dlcli.settings  # noqa: F401  the schemas the options inherit

    config_name = command if command in ("eval", "summary", "gradcheck", "predict", "export") else "train"
    keep = [o for o in overrides if "=" in o and not o.startswith(("-", "hydra.", "hydra/", "+hydra"))]
    try:
        with initialize_config_module("dlcli.configs", version_base="1.3"):
            return OmegaConf.to_container(compose(config_name, overrides=keep))
    except Exception:  # another bad override: the generic message will do
        return None


def hydra_message(exc: BaseException) -> str:
    """Hydra's multi-line messages (and the OmegaConf error behind them) joined into one line."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options:
        first = str(exc).strip().splitlines()[0].rstrip(".")
        wanted = re.search(r"Could not find '(?:[^']*/)?([^'/]+)'", first)
        near = difflib.get_close_matches(wanted.group(1), exc.options, n=1) if wanted else []
        hint = f"did you mean {near[0]}? " if near else ""
        return f"{first}; {hint}choose one of: {', '.join(sorted(exc.options))}"
    parts = []
    for e in (exc, exc.__cause__):
        if e is None:
            continue
        if isinstance(e, OSError) and e.filename:
            parts.append(f"{e.strerror}: {e.filename} (choose a writable folder, e.g. hydra.run.dir=...)")
            continue
        for line in str(e).splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "object_type=", "reference_type=", "Set the environment")):
                parts.append(line.rstrip(".:"))
    return "; ".join(dict.fromkeys(parts)) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
