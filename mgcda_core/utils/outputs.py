"""Checks of an output path named on the command line, made before any work starts."""

from __future__ import annotations

from pathlib import Path

from mgcda_core.errors import OutputError


def check_output_file(path: Path, option: str, overwrite: bool = False) -> None:
    """Refuse, naming ``option``: a folder at ``path``, a missing parent folder (a mistyped path is not created)
    and, unless ``overwrite``, an existing file."""
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; name a file")
    if not path.parent.is_dir():
        raise OutputError(f"{option} {path}: folder {path.parent} does not exist (create it first)")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {path} exists; pass --overwrite to replace it")
