"""Tab completion in bash (and zsh through bashcompinit) for `dlcli <command> ...`.

Hydra completes config groups, options and keys, but its install script assumes the program's
first word is the whole command, while dlcli's configs sit behind a subcommand. So dlcli installs
its own small bash function: it completes the subcommand itself and, after it, asks Hydra
(`dlcli <command> -sc query=bash`) with the subcommand taken out of the line.
"""

import os
import sys

HYDRA_COMMANDS = ("train", "eval", "predict", "export", "gradcheck", "summary")

SCRIPT = """_dlcli_completion()
{
    local word=${COMP_WORDS[COMP_CWORD]}
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=($(compgen -W "%(commands)s report" -- "$word"))
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

USAGE = ("the shell completion of dlcli is for bash (and zsh with bashcompinit): "
         'eval "$(dlcli train -sc install=bash)"; remove it with eval "$(dlcli train -sc uninstall=bash)"')


def shell_completion(command: str, args: list[str]) -> int:
    """`dlcli <command> -sc install=bash | uninstall=bash | query=bash`."""
    action = next((a for a in args if "=" in a and not a.startswith("-")), "")
    if action in ("install=bash", "install=zsh"):
        print(SCRIPT % {"commands": " ".join(HYDRA_COMMANDS), "pattern": "|".join(HYDRA_COMMANDS)}, end="")
        return 0
    if action in ("uninstall=bash", "uninstall=zsh"):
        print("complete -r dlcli 2>/dev/null; unset -f _dlcli_completion")
        return 0
    if action == "query=bash" and command in HYDRA_COMMANDS and "COMP_LINE" in os.environ:
        words = os.environ["COMP_LINE"].split(" ")
        # Hydra drops the program's name from the line it completes: leave it one word to drop
        os.environ["COMP_LINE"] = " ".join(["dlcli", *words[2:]])
        import importlib

        from dlcli.cli import COMMANDS

        sys.argv = [f"dlcli {command}", "-sc", "query=bash"]
        importlib.import_module(COMMANDS[command][0]).main()
        return 0
    print(f"dlcli: error: {' '.join(args)} is not supported; {USAGE}", file=sys.stderr)
    return 2
