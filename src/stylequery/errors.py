"""Exceptions for user-facing failures.

Everything the CLI should report as one line (bad input, a missing file, a mismatched
index) derives from :class:`StyleQueryError`; anything else is a bug and keeps its traceback.
"""


class StyleQueryError(Exception):
    """A failure caused by the user's input or environment, reported as one line."""


class ConfigError(StyleQueryError):
    """An unknown config key, a value of the wrong type, or an unreadable config file."""


class DataError(StyleQueryError):
    """A label file, prepared folder, query file or image that cannot be used."""


class WeightsError(StyleQueryError):
    """Pretrained weights that cannot be found or loaded."""


class CheckpointError(StyleQueryError):
    """A checkpoint that is missing, corrupt or does not match what it is used with."""


class IndexMismatchError(StyleQueryError):
    """An index that is missing, corrupt, or was embedded by another model."""


class LockError(StyleQueryError):
    """Another process holds the write lock of a file or folder for longer than we wait."""


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (its type name when it has no text), for error messages."""
    return " ".join(str(exc).split()) or type(exc).__name__
