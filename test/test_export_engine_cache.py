"""Engine cache: keys, verification and rebuild rules, atomic writes, two processes racing.

The "builder" here is a real Python callable producing bytes: the cache's contract is about bytes and keys, not
about TensorRT, so these tests run everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mgcda_core.export.engine_cache import EngineCache, EngineKey, verify_engine, write_engine

ONNX_BYTES = b"pretend-onnx-model-bytes"
SHAPE = (1, 3, 256, 512)


def make_key(**changes) -> EngineKey:
    fields = dict(
        onnx_sha256=hashlib.sha256(ONNX_BYTES).hexdigest(),
        tensorrt_version="10.15.1",
        gpu_name="Orin",
        compute_capability="8.7",
        precision="fp16",
        recipe="r2 fp16: mixed-precision ONNX, strongly typed",
        input_shape=(SHAPE, SHAPE, SHAPE),
    )
    fields.update(changes)
    return EngineKey(**fields)


class CountingBuilder:
    """Produces distinct engine bytes on each call and counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return b"ENGINE" + ONNX_BYTES + bytes([self.calls]) * 1000


def test_key_digest_changes_with_every_field_and_survives_json() -> None:
    key = make_key()
    variants = {
        "onnx_sha256": hashlib.sha256(b"other").hexdigest(),
        "tensorrt_version": "11.0.0",
        "gpu_name": "NVIDIA H100",
        "compute_capability": "9.0",
        "precision": "fp32",
        "recipe": "r1 fp16: BuilderFlag.FP16",
        "input_shape": (SHAPE, SHAPE, (1, 3, 512, 1024)),
    }
    assert set(variants) == {f.name for f in dataclasses.fields(EngineKey)}
    digests = {key.digest()} | {make_key(**{name: value}).digest() for name, value in variants.items()}
    assert len(digests) == 1 + len(variants)
    round_trip = EngineKey.from_dict(json.loads(json.dumps(key.to_dict())))
    assert round_trip == key and round_trip.digest() == key.digest()


def test_key_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="precision"):
        make_key(precision="int8")
    with pytest.raises(ValueError, match="sha256"):
        make_key(onnx_sha256="abc")


def test_build_once_then_hit(tmp_path: Path) -> None:
    cache, builder, key = EngineCache(tmp_path), CountingBuilder(), make_key()
    first = cache.get_or_build(key, builder)
    second = cache.get_or_build(key, builder)
    assert builder.calls == 1 and first.built and not second.built
    assert first.data == second.data == first.path.read_bytes()
    sidecar = json.loads(cache.sidecar_path(first.path).read_text())
    assert sidecar["engine_sha256"] == hashlib.sha256(first.data).hexdigest()
    assert sidecar["engine_size"] == len(first.data)
    assert EngineKey.from_dict(sidecar["key"]) == key
    # No temporary files or partial writes are left beside the engine.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.path.name, first.path.name + ".json", first.path.name + ".lock"])


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def damage_foreign(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes(len(data)))  # same size, other bytes


def damage_sidecar_missing(path: Path) -> None:
    EngineCache.sidecar_path(path).unlink()


def damage_sidecar_corrupt(path: Path) -> None:
    EngineCache.sidecar_path(path).write_text("{not json")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (damage_truncate, "truncated"),
        (damage_foreign, "sha256"),
        (damage_sidecar_missing, "no sidecar"),
        (damage_sidecar_corrupt, "unreadable"),
    ],
)
def test_damaged_engine_is_rebuilt_with_one_message(tmp_path: Path, caplog, damage, expected: str) -> None:
    cache, builder, key = EngineCache(tmp_path), CountingBuilder(), make_key()
    path = cache.get_or_build(key, builder).path
    damage(path)
    assert verify_engine(path, key)[0] is None
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mgcda_core.export.engine_cache"):
        rebuilt = cache.get_or_build(key, builder)
    assert builder.calls == 2 and rebuilt.built and expected in rebuilt.reason
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and expected in messages[0]
    assert verify_engine(rebuilt.path, key) == (rebuilt.data, "cache hit")


@pytest.mark.parametrize(
    "other",
    [{"tensorrt_version": "10.3.0"}, {"gpu_name": "NVIDIA H100"}, {"compute_capability": "9.0"},
     {"recipe": "r1 fp16: BuilderFlag.FP16"}],
)
def test_engine_for_another_tensorrt_or_gpu_is_rebuilt(tmp_path: Path, other: dict) -> None:
    cache, builder, key = EngineCache(tmp_path), CountingBuilder(), make_key()
    # An engine built elsewhere copied under the name this key expects: its own sidecar is intact.
    write_engine(cache.engine_path(key), make_key(**other), b"engine from another machine")
    result = cache.get_or_build(key, builder)
    name, value = next(iter(other.items()))
    assert result.built and builder.calls == 1
    assert f"{name}: cached {value!r}, wanted {getattr(key, name)!r}" in result.reason


def test_sidecar_of_the_previous_format_is_rebuilt(tmp_path: Path) -> None:
    """Version-1 sidecars predate the recipe field: their engines are rebuilt, not trusted."""
    cache, builder, key = EngineCache(tmp_path), CountingBuilder(), make_key()
    path = cache.get_or_build(key, builder).path
    sidecar = json.loads(cache.sidecar_path(path).read_text())
    sidecar["version"] = 1
    del sidecar["key"]["recipe"]
    cache.sidecar_path(path).write_text(json.dumps(sidecar))
    result = cache.get_or_build(key, builder)
    assert result.built and builder.calls == 2 and result.reason == "sidecar version 1, expected 2"


def test_failed_build_writes_nothing(tmp_path: Path) -> None:
    cache, key = EngineCache(tmp_path), make_key()

    def failing() -> bytes:
        raise RuntimeError("parser error")

    with pytest.raises(RuntimeError, match="parser error"):
        cache.get_or_build(key, failing)
    with pytest.raises(RuntimeError, match="no engine bytes"):
        cache.get_or_build(key, lambda: b"")
    assert not cache.engine_path(key).exists()
    assert not cache.sidecar_path(cache.engine_path(key)).exists()


RACER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from mgcda_core.export.engine_cache import EngineCache, EngineKey
    import json
    key = EngineKey.from_dict(json.loads(sys.argv[2]))
    start, calls = Path(sys.argv[3]), Path(sys.argv[4])
    while not start.exists():  # both racers leave the gate together
        time.sleep(0.005)

    def build():
        with open(calls, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(0.3)  # a slow build, so the second racer arrives while the first is building
        return f"engine built by {os.getpid()}".encode() * 100

    result = EngineCache(sys.argv[1]).get_or_build(key, build)
    print(result.built, result.data[:40].decode())
    """
)


def test_two_processes_racing_leave_one_valid_engine(tmp_path: Path) -> None:
    key, start, calls = make_key(), tmp_path / "start", tmp_path / "calls.txt"
    cache_dir = tmp_path / "cache"
    args = [sys.executable, "-c", RACER, str(cache_dir), json.dumps(key.to_dict()), str(start), str(calls)]
    racers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    start.touch()
    outputs = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    assert len(calls.read_text().split()) == 1  # exactly one build
    built_flags = sorted(out.split()[0] for out, _ in outputs)
    assert built_flags == ["False", "True"]
    data, reason = verify_engine(EngineCache(cache_dir).engine_path(key), key)
    assert reason == "cache hit" and data is not None
    assert {out.split(" ", 1)[1].strip() for out, _ in outputs} == {data[:40].decode()}
