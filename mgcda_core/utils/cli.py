"""Argument types and error reporting shared by the command-line tools."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from mgcda_core.errors import MgcdaError

MAX_ERROR_CHARS = 2000  # a message quoting a long input still fits a terminal line or two
USER_ERROR_STATUS = 2   # as argparse exits on a bad argument

Main = TypeVar("Main", bound=Callable[..., int])


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``256x512``) → (height, width); argparse reports anything else with the expected form."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 256x512, got {text[:40]!r}") from None
    return height, width


def one_line(error: BaseException) -> str:
    """The error's message on one line (its lines joined), bounded in length.

    An error raised in a DataLoader worker arrives re-raised as ``type("Caught ... Original Traceback ...")``
    (torch/_utils.py ``ExceptionWrapper``); its original message is the traceback's last line.
    """
    text = str(error)
    origin = f"\n{type(error).__module__}.{type(error).__qualname__}: "
    if text.startswith("Caught ") and origin in text:
        text = text.rsplit(origin, 1)[1]
    text = " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."


def user_errors(main: Main) -> Main:
    """Decorate a CLI ``main``: a :class:`MgcdaError` becomes ``error: <one line>`` on stderr and exit status 2.

    Every other exception propagates with its traceback: it is a bug, not something the user can fix.
    """

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> int:
        try:
            return main(*args, **kwargs)
        except MgcdaError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            return USER_ERROR_STATUS

    return wrapper  # type: ignore[return-value]
