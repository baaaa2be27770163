"""TensorRT timing caches: one file per TensorRT version, compute capability and precision, checked and recovered.

NVIDIA's builder-performance guide: a timing cache holds layer timings "specific to the targeted device, CUDA,
TensorRT versions, and BuilderConfig parameters that can change the layer implementation, such as
BuilderFlag::kTF32", hence one file per (TensorRT version, compute capability, precision) instead of one shared
file. ``IBuilderConfig.set_timing_cache(cache, ignore_mismatch=False)`` returns False when the cache's header does
not match this TensorRT/device; ``create_timing_cache(b"")`` makes an empty cache. A cache that cannot be read or
is refused is discarded and replaced by an empty one (one warning); saving after the build is best effort, since
the engine does not depend on it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mgcda_core.utils.atomic import atomic_write_bytes

LOG = logging.getLogger(__name__)


def timing_cache_path(directory: Path, tensorrt_version: str, capability: str, precision: str) -> Path:
    """``<directory>/timing-trt<version>-sm<major><minor>-<precision>.cache``."""
    if not re.fullmatch(r"\d+\.\d+", capability):
        raise ValueError(f"compute capability must be 'major.minor', got {capability!r}")
    version = re.sub(r"[^0-9A-Za-z.]+", "_", tensorrt_version)
    return Path(directory) / f"timing-trt{version}-sm{capability.replace('.', '')}-{precision}.cache"


def _load(builder_config: Any, data: bytes) -> Any | None:
    """The timing cache deserialized from ``data`` and attached to ``builder_config``, or None if refused."""
    try:
        cache = builder_config.create_timing_cache(data)
    except (RuntimeError, TypeError, ValueError):  # the bindings raise on some malformed buffers
        return None
    if cache is None or not builder_config.set_timing_cache(cache, ignore_mismatch=False):
        return None
    return cache


def attach_timing_cache(builder_config: Any, path: Path | None) -> bool:
    """Attach the cache stored at ``path`` (or an empty one) to ``builder_config``.

    Returns True when a stored cache was loaded. A stored cache TensorRT refuses is deleted, with one warning.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    if data and _load(builder_config, data) is not None:
        return True
    if data:
        LOG.warning("timing cache %s is unreadable or from another TensorRT/GPU: discarded, timing from scratch", path)
        discard_timing_cache(path)
    if _load(builder_config, b"") is None:
        raise RuntimeError("TensorRT refused an empty timing cache (create_timing_cache/set_timing_cache failed)")
    return False


def discard_timing_cache(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def save_timing_cache(builder_config: Any, path: Path | None) -> None:
    """Write ``builder_config``'s timing cache to ``path`` atomically; a failure is logged, never raised."""
    if path is None:
        return
    try:
        cache = builder_config.get_timing_cache()
        if cache is None:
            raise RuntimeError("the builder config has no timing cache")
        atomic_write_bytes(path, bytes(cache.serialize()))
    except (RuntimeError, OSError, TypeError) as error:
        LOG.warning("could not save timing cache %s (%s); the engine is unaffected", path, error)
