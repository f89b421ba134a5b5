"""The `dlcli` command: a thin dispatcher that hands everything after the subcommand to Hydra.

It imports neither torch nor Hydra itself, so `dlcli --help` answers at once.
"""

import importlib
import os
import sys

from dlcli import __version__

COMMANDS = {
    "train": ("dlcli.train", "train a model:  dlcli train model=lenet data=mnist optimizer.lr=0.1"),
    "eval": ("dlcli.evaluate", "evaluate a checkpoint:  dlcli eval checkpoint=outputs/<run>/checkpoints/best.pt"),
    "report": ("dlcli.report", "summarize sweeps and runs:  dlcli report outputs/multirun/<date>/<time>"),
    "gradcheck": ("dlcli.gradcheck", "backprop vs numerical gradients:  dlcli gradcheck model=lenet data=mnist"),
    "summary": ("dlcli.summary", "the model as a table:  dlcli summary model=lenet data=mnist"),
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
        print(f"dlcli: unknown command {args[0]!r}; the commands are: {', '.join(COMMANDS)} "
              "(see dlcli --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    if args[0] in PLAIN:
        return module.main(args[1:])
    # let Hydra's own errors (unknown option or key, bad override syntax) reach us, to print them as one line
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # Hydra reads sys.argv itself; make it look as if `dlcli <command>` were the program
    sys.argv = [f"dlcli {args[0]}", *args[1:]]
    try:
        module.main()
    except BrokenPipeError:  # `dlcli train --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except Exception as exc:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        # Hydra refusing the command line or the config, or the run folder it could not make
        if os.environ.get("DLCLI_DEBUG") or not isinstance(exc, (HydraException, OmegaConfBaseException,
                                                                   ValueError, OSError)):
            raise
        print(f"dlcli: error: {hydra_message(exc)}", file=sys.stderr)
        return 2
    return 0


def hydra_message(exc: BaseException) -> str:
    """Hydra's multi-line messages (and the OmegaConf error behind them) joined into one line."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options:
        first = str(exc).strip().splitlines()[0].rstrip(".")
        return f"{first}; choose one of: {', '.join(sorted(exc.options))}"
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
