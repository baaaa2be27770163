"""A TensorRT engine cache that never trusts a file it cannot verify.

An engine is only valid for the exact ONNX bytes, TensorRT version, GPU model and compute capability, precision,
precision recipe (how the builder was configured for it) and input-shape profile it was built for. Each cached engine ``<digest>.engine`` has a JSON sidecar
``<digest>.engine.json`` recording that key plus the engine's size and sha256. On lookup the sidecar's key must
equal the wanted key and the engine bytes must match the recorded size and hash; anything else (missing or
unreadable sidecar, truncated file, engine of another TensorRT/GPU, foreign bytes) is rebuilt, with one log
message saying what differed. Engine and sidecar are written atomically, under an exclusive lock file, so two
processes racing to build the same engine leave one valid engine (the second finds the first's result).

Pure Python: the builder is any callable returning the serialized engine bytes (see ``tensorrt_builder``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mgcda_core.utils.atomic import atomic_write_bytes, atomic_write_json

LOG = logging.getLogger(__name__)

SIDECAR_FORMAT = "mgcda-tensorrt-engine"
SIDECAR_VERSION = 2  # 2: the key gained ``recipe``; version-1 sidecars are rebuilt
PRECISIONS = ("fp32", "fp16")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on (docs/DEPLOYMENT.md, engine cache rules)."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.7" on Jetson Orin
    precision: str  # "fp32" | "fp16"
    recipe: str  # how that precision was built (``tensorrt_builder.precision_recipe``): a changed recipe rebuilds
    input_shape: tuple[Shape, Shape, Shape]  # optimisation profile (min, opt, max); all equal for a fixed shape

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if len(self.onnx_sha256) != 64:
            raise ValueError(f"onnx_sha256 must be a 64-digit hex sha256, got {self.onnx_sha256!r}")
        # JSON round trips turn tuples into lists; normalise so equality survives the sidecar.
        object.__setattr__(self, "input_shape", tuple(tuple(int(d) for d in s) for s in self.input_shape))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (min, opt, max) shapes, got {self.input_shape!r}")

    def to_dict(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        names = {field.name for field in dataclasses.fields(cls)}
        if set(data) != names:
            raise ValueError(f"key fields {sorted(data)} differ from expected {sorted(names)}")
        return cls(**data)

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the cache file name."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_differences(cached: EngineKey, wanted: EngineKey) -> list[str]:
    """Human-readable ``field: cached X, wanted Y`` for every field that differs."""
    return [
        f"{name}: cached {value!r}, wanted {getattr(wanted, name)!r}"
        for name, value in cached.to_dict().items()
        if value != getattr(wanted, name)
    ]


@dataclass(frozen=True)
class CachedEngine:
    """A verified engine: its bytes (already hash-checked), where it lives, and whether it was just built."""

    path: Path
    data: bytes
    built: bool
    reason: str  # why it was (re)built, or "cache hit"


class EngineCache:
    """Directory of verified TensorRT engines keyed by ``EngineKey``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def engine_path(self, key: EngineKey) -> Path:
        return self.directory / f"{key.digest()[:24]}.engine"

    @staticmethod
    def sidecar_path(engine_path: Path) -> Path:
        return engine_path.with_name(engine_path.name + ".json")

    def load(self, key: EngineKey) -> tuple[bytes | None, str]:
        """Return ``(engine bytes, "cache hit")`` if a valid engine exists, else ``(None, what is wrong)``."""
        return verify_engine(self.engine_path(key), key)

    def get_or_build(self, key: EngineKey, build: Callable[[], bytes]) -> CachedEngine:
        """The cached engine for ``key``; builds (once, even across processes) when absent or invalid."""
        path = self.engine_path(key)
        data, reason = verify_engine(path, key)
        if data is not None:
            return CachedEngine(path, data, built=False, reason=reason)
        with _exclusive_lock(path.with_name(path.name + ".lock")):
            # Another process may have finished building while we waited for the lock.
            data, reason = verify_engine(path, key)
            if data is not None:
                return CachedEngine(path, data, built=False, reason=reason)
            LOG.warning("building TensorRT engine %s: %s", path, reason)
            data = build()
            if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
                raise RuntimeError(f"engine builder returned no engine bytes (got {type(data).__name__})")
            data = bytes(data)
            write_engine(path, key, data)
            return CachedEngine(path, data, built=True, reason=reason)


def write_engine(path: Path, key: EngineKey, data: bytes, extra: dict[str, Any] | None = None) -> None:
    """Write engine then sidecar, each atomically. A crash between the two leaves a stale sidecar whose hash
    does not match, so the pair is rebuilt rather than trusted."""
    atomic_write_bytes(path, data)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "key": key.to_dict(),
        "key_digest": key.digest(),
        "engine_size": len(data),
        "engine_sha256": sha256_bytes(data),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_json(EngineCache.sidecar_path(path), sidecar)


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The sidecar of ``engine_path``; raises ValueError naming the problem if it is missing or malformed."""
    sidecar_path = EngineCache.sidecar_path(engine_path)
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no sidecar {sidecar_path.name} (engine of unknown origin)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"sidecar {sidecar_path.name} unreadable: {error}") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"sidecar {sidecar_path.name} is not a {SIDECAR_FORMAT} sidecar")
    if sidecar.get("version") != SIDECAR_VERSION:
        raise ValueError(f"sidecar version {sidecar.get('version')!r}, expected {SIDECAR_VERSION}")
    for field, kind in (("key", dict), ("engine_size", int), ("engine_sha256", str)):
        if not isinstance(sidecar.get(field), kind):
            raise ValueError(f"sidecar {sidecar_path.name} lacks a valid {field!r}")
    return sidecar


def verify_engine(path: Path, key: EngineKey | None = None) -> tuple[bytes | None, str]:
    """Read ``path`` and check it against its sidecar (and against ``key`` when given).

    Returns ``(bytes, "cache hit")`` when everything matches, else ``(None, reason)`` with one sentence
    saying what differs.
    """
    if not path.is_file():
        return None, f"no cached engine {path.name}"
    try:
        sidecar = read_sidecar(path)
        cached_key = EngineKey.from_dict(sidecar["key"])
    except (ValueError, TypeError) as error:
        return None, str(error)
    if key is not None:
        differences = key_differences(cached_key, key)
        if differences:
            return None, "cached engine was built for another configuration: " + "; ".join(differences)
    data = path.read_bytes()
    if len(data) != sidecar["engine_size"]:
        return None, (f"engine is {len(data)} bytes but its sidecar records {sidecar['engine_size']} "
                      "(truncated or replaced)")
    if sha256_bytes(data) != sidecar["engine_sha256"]:
        return None, "engine bytes do not match the sha256 in its sidecar (corrupted or foreign file)"
    return data, "cache hit"


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Block until this process holds an exclusive advisory lock on ``lock_path`` (released on exit, also
    when the process dies, since the kernel drops flock locks with the file descriptor)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
