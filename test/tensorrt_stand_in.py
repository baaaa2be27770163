"""A stand-in for the ``tensorrt`` module, for the build decisions that must be tested where TensorRT cannot run.

It implements the API surface ``mgcda_core.export.tensorrt_builder`` calls, with the documented semantics that the
decisions depend on (TensorRT Python API reference): ``BuilderFlag.TF32`` on by default, ``BuilderFlag.FP16`` only
on 10.x, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` on both, ``set_timing_cache`` returning False for a cache
from another TensorRT version or device, ``create_timing_cache`` failing (None) on unreadable bytes,
``OnnxParser.parse`` returning False with errors, ``build_serialized_network`` returning None on failure.
Everything it was asked is recorded for the tests to inspect. Install with ``monkeypatch.setitem(sys.modules,
"tensorrt", StandIn(...))``.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field
from typing import Any

import onnx

TIMING_MAGIC = b"stand-in-timing-cache|"


class Logger:
    WARNING = 2

    def __init__(self, severity: int) -> None:
        self.severity = severity


@dataclass
class TimingCache:
    version: str
    capability: str
    entries: list[str] = field(default_factory=list)
    fail_serialize: bool = False

    def serialize(self) -> bytes:
        if self.fail_serialize:
            raise RuntimeError("serialize failed")
        return TIMING_MAGIC + "|".join([self.version, self.capability, *self.entries]).encode()


@dataclass
class Network:
    flags: int
    parsed: onnx.ModelProto | None = None


class Parser:
    def __init__(self, network: Network, logger: Logger, trt: StandIn) -> None:
        self.network, self.trt = network, trt
        self.errors: list[str] = []

    def parse(self, data: bytes) -> bool:
        self.network.parsed = onnx.load_from_string(data)
        self.trt.parsed.append(self.network.parsed)
        self.errors = list(self.trt.parse_errors)
        return not self.errors

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, minimum: tuple, optimum: tuple, maximum: tuple) -> None:
        self.shapes[name] = (minimum, optimum, maximum)


class BuilderConfig:
    def __init__(self, trt: StandIn) -> None:
        self.trt = trt
        self.flags = {trt.BuilderFlag.TF32} if hasattr(trt.BuilderFlag, "TF32") else set()  # TF32: on by default
        self.timing_cache: TimingCache | None = None
        self.profiles: list[Profile] = []
        self.pool_limits: dict[Any, int] = {}

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        self.pool_limits[pool] = size

    def set_flag(self, flag: Any) -> None:
        self.flags.add(flag)

    def clear_flag(self, flag: Any) -> None:
        self.flags.discard(flag)

    def add_optimization_profile(self, profile: Profile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> TimingCache | None:
        data = bytes(data)
        if not data:
            return TimingCache(self.trt.__version__, self.trt.capability)
        if not data.startswith(TIMING_MAGIC):
            return None  # unreadable: the real call returns no cache
        version, capability, *entries = data[len(TIMING_MAGIC):].decode().split("|")
        return TimingCache(version, capability, [e for e in entries if e])

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        matches = (cache.version, cache.capability) == (self.trt.__version__, self.trt.capability)
        if not matches and not ignore_mismatch:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> TimingCache | None:
        if self.timing_cache is not None:
            self.timing_cache.fail_serialize = self.trt.fail_timing_serialize
        return self.timing_cache


class Builder:
    def __init__(self, logger: Logger, trt: StandIn) -> None:
        self.trt = trt

    def create_network(self, flags: int) -> Network:
        self.trt.network_flags.append(flags)
        return Network(flags)

    def create_builder_config(self) -> BuilderConfig:
        config = BuilderConfig(self.trt)
        self.trt.configs.append(config)
        return config

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
        cache = config.timing_cache
        self.trt.builds.append((set(config.flags), list(cache.entries) if cache else None))
        if self.trt.build_results:
            if not self.trt.build_results.pop(0):
                return None
        if cache is not None:
            cache.entries.append(f"layer{len(cache.entries)}")
        return b"stand-in engine for " + network.parsed.graph.name.encode()


class StandIn(types.ModuleType):
    """``tensorrt`` of ``version`` (10.x has ``BuilderFlag.FP16``; 11.x does not) on a GPU of ``capability``."""

    def __init__(self, version: str = "10.3.0", capability: str = "8.7") -> None:
        super().__init__("tensorrt")
        self.__version__ = version
        self.capability = capability
        major = int(version.split(".")[0])
        flags = ["TF32"] + (["FP16"] if major < 11 else [])
        self.BuilderFlag = enum.Enum("BuilderFlag", flags)
        self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
        self.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])
        self.Logger = Logger
        # Behaviour switches the tests set.
        self.parse_errors: list[str] = []
        self.build_results: list[bool] = []  # per build: False = build_serialized_network returns None
        self.fail_timing_serialize = False
        # What the builder was asked.
        self.network_flags: list[int] = []
        self.configs: list[BuilderConfig] = []
        self.parsed: list[onnx.ModelProto] = []
        self.builds: list[tuple[set, list[str] | None]] = []

    def Builder(self, logger: Logger) -> Builder:  # noqa: N802 - TensorRT's class name
        return Builder(logger, self)

    def OnnxParser(self, network: Network, logger: Logger) -> Parser:  # noqa: N802 - TensorRT's class name
        return Parser(network, logger, self)
