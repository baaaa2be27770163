"""Atomic file writing: write to a temporary file in the same folder, fsync, then rename over the target.

A reader (or a resumed run) therefore sees either the old complete file or the new complete file, never a
truncated one, even if the process is killed mid-write. The file gets the mode an ordinary ``open`` would (0666
less the umask), not the temporary file's 0600. A killed write leaves ``.<name>.<random>.tmp`` behind; the next
successful write of the same target removes such leftovers once they are stale (an in-progress write of another
process keeps touching its own). A failing write (read-only folder, full disk, a folder in the way) raises
:class:`OutputError` naming the target, and the previous file stays as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from mgcda_core.errors import MgcdaError, OutputError

STALE_TEMP_S = 60.0  # a temporary file untouched this long belongs to a dead writer


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on clean exit it is fsynced and renamed onto ``path``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open supports modes 'wb' and 'w', got {mode!r}")
    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(error, OSError) and not isinstance(error, MgcdaError):
            raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
        raise
    _remove_stale_temporaries(target)


def _umask() -> int:
    try:  # Linux reports it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(target: Path) -> None:
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if pattern.fullmatch(entry.name) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Let ``writer`` fill an in-memory buffer, then write it to ``path`` atomically.

    Useful for libraries that write to file objects (``torch.save``, ``PIL.Image.save``, matplotlib).
    """
    buffer = io.BytesIO()
    writer(buffer)
    atomic_write_bytes(path, buffer.getvalue())
