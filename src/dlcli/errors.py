"""Errors a user can fix. They are printed as one line, without a traceback."""


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
