"""Tab completion in bash (and zsh through bashcompinit) for `dlcli <command> ...`.

Hydra completes config groups, options and keys, but its install script assumes the program's
first word is the whole command, while dlcli's configs sit behind a subcommand. So dlcli installs
its own small bash function: it completes the subcommand itself and, after it, asks Hydra
(`dlcli <command> -sc query=bash`) with the subcommand taken out of the line.
"""

import importlib
import os
import sys

SCRIPT = """_dlcli_completion()
{
    local word=${COMP_WORDS[COMP_CWORD]}
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "%(commands)s" -- "$word"))
        return
    fi
    case ${COMP_WORDS[1]} in
        %(pattern)s) ;;
        *) return ;;
    esac
    local choices
    choices=$(COMP_LINE=$COMP_LINE dlcli ${COMP_WORDS[1]} -sc query=bash 2>/dev/null)
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "$word"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
complete -o nospace -o default -F _dlcli_completion dlcli
"""

USAGE = (
    "the shell completion of dlcli is for bash (and zsh with bashcompinit): "
    'eval "$(dlcli train -sc install=bash)"; remove it with eval "$(dlcli train -sc uninstall=bash)"'
)


def shell_completion(command: str, args: list[str], commands: dict[str, str], plain: set[str]) -> int:
    """`dlcli <command> -sc install=bash | uninstall=bash | query=bash`, for the dispatcher's table of
    `commands` (name -> module); the `plain` ones take no Hydra line, so there is nothing to ask Hydra."""
    hydra_commands = [name for name in commands if name not in plain]
    action = next((a for a in args if "=" in a and not a.startswith("-")), "")
    if action in ("install=bash", "install=zsh"):
        print(SCRIPT % {"commands": " ".join(commands), "pattern": "|".join(hydra_commands)}, end="")
        return 0
    if action in ("uninstall=bash", "uninstall=zsh"):
        print("complete -r dlcli 2>/dev/null; unset -f _dlcli_completion")
        return 0
    if action == "query=bash" and command in hydra_commands and "COMP_LINE" in os.environ:
        words = os.environ["COMP_LINE"].split(" ")
        # Hydra drops the program's name from the line it completes: leave it one word to drop
        os.environ["COMP_LINE"] = " ".join(["dlcli", *words[2:]])
        sys.argv = [f"dlcli {command}", "-sc", "query=bash"]
        importlib.import_module(commands[command]).main()
        return 0
    print(f"dlcli: error: {' '.join(args)} is not supported; {USAGE}", file=sys.stderr)
    return 2
