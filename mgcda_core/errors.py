"""The project's error types: a user mistake or a bad input, never a bug.

Every command-line tool turns a :class:`MgcdaError` into one line ``error: ...`` on stderr and exit status 2
(``mgcda_core.utils.cli.user_errors``); any other exception is a bug and keeps its traceback. Messages name the
file, key or value at fault and quote user input only through :func:`shorten`, so a hostile input cannot make a
message unbounded. The subclasses also derive from the built-in type callers caught before they existed.
"""

from __future__ import annotations

from typing import Any

MESSAGE_VALUE_CHARS = 80  # longest quoted value in a message


class MgcdaError(Exception):
    """Base of every error a user can cause and fix (bad file, bad setting, missing input, full disk)."""


class ConfigError(MgcdaError, ValueError):
    """A configuration file, override or command-line value is invalid; the message names the key."""


class DataError(MgcdaError, ValueError):
    """An input data file (image, label, bag, data set folder) is missing, corrupt or inconsistent."""


class MissingInputError(MgcdaError, FileNotFoundError):
    """An input file or folder the user named does not exist."""


class ModelError(MgcdaError, ValueError):
    """A weights file or checkpoint cannot be used (unreadable, non-finite, foreign architecture)."""


class WeightsUnavailableError(MgcdaError, RuntimeError):
    """Named pretrained weights cannot be loaded (file absent, package not installed, no internet); the message
    names the weights and their file."""


class OutputError(MgcdaError, OSError):
    """An output cannot be written (exists without --overwrite, read-only, full disk, not a folder)."""


def shorten(value: Any, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the original length), for quoting user input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
