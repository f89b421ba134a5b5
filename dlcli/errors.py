"""Errors a user can fix. They are printed as one line, without a traceback."""

from dlcli.layout import CHECKPOINTS, LAST


def first_line(exc: BaseException) -> str:
    """An exception's first non-blank line, for a one-line message (its type's name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """All of an exception's message on one line, each distinct line once (its type's name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(dict.fromkeys(lines)) or type(exc).__name__


class DlcliError(Exception):
    """Base class: the message says what is wrong, what is allowed and how to fix it."""

    exit_code = 2


class ConfigError(DlcliError):
    """A config value of the wrong type or out of range."""


class DataError(DlcliError):
    """Dataset files missing, unreadable or corrupt."""


class CheckpointError(DlcliError):
    """A checkpoint that is missing, damaged or does not fit."""


class DivergedError(DlcliError):
    """The loss became NaN or infinite."""

    exit_code = 3


class CheckFailed(DlcliError):
    """A check the user asked for (dlcli gradcheck) found a problem."""

    exit_code = 1


class Interrupted(DlcliError):
    """SIGINT or SIGTERM stopped training at a step boundary, after last.pt was saved."""

    def __init__(self, signum: int, epoch: int, step: int, resume: str = "", saved: bool = True):
        import signal

        self.signum, self.epoch, self.step, self.resume, self.saved = signum, epoch, step, resume, saved
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as the shell reports them
        name = signal.Signals(signum).name
        if not saved:
            super().__init__(
                f"{name}: stopped while starting, before any checkpoint; start again with the same command"
            )
            return
        super().__init__(
            f"{name}: stopped at epoch {epoch}, step {step} with {CHECKPOINTS}/{LAST} saved"
            + (f"; resume with: {resume}" if resume else "")
        )

    def __reduce__(self):  # a worker process hands it to the launching process (pickled)
        return Interrupted, (self.signum, self.epoch, self.step, self.resume, self.saved)


class ProcessesFailed(DlcliError):
    """A process of a multi-process run died or lost contact with the others; the rest were stopped."""

    exit_code = 1
