"""Argument types shared by the command-line tools."""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``256x512``) → (height, width); argparse reports anything else with the expected form."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 256x512, got {text!r}") from None
    return height, width
