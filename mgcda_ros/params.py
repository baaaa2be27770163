"""The node's parameters: one typed dataclass, validated as a whole before anything starts.

ROS declares each field under its own name with the dataclass default; ``config/anomaly.yaml`` mirrors it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mgcda_core.errors import ConfigError
from mgcda_core.pipeline.detector import SIZE_MULTIPLE
from mgcda_core.pipeline.scores import SCORES, TRAINING_FREE

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
TRANSPORTS = ("raw", "compressed")
PRECISIONS = ("fp32", "fp16")
RELIABILITIES = ("best_effort", "reliable")
MAX_INPUT_SIDE = 4096


class ParameterError(ConfigError):
    """A parameter value the node refuses; the message names the parameter, the value and what is allowed."""


@dataclass(frozen=True)
class NodeParams:
    """Parameters of ``anomaly_node`` (SPEC §7)."""

    #: inference runtime: torch, onnxruntime, tensorrt, or auto (best available for model_path and device)
    backend: str = "auto"
    #: trained checkpoint (.pt), ONNX graph (.onnx) or TensorRT engine; empty = embedded default (no training)
    model_path: str = ""
    #: "cpu", "cuda" or "cuda:N"
    device: str = "cpu"
    #: network input size, multiples of 32 (the image is resized to it and the score resized back)
    input_width: int = 512
    input_height: int = 256
    #: anomaly score; dissimilarity/ensemble need a trained model_path, the others are training-free
    score: str = "max_logit"
    #: mask threshold on the calibrated score in [0, 1] (mask = score >= threshold)
    threshold: float = 0.5
    overlay_alpha: float = 0.5
    publish_score: bool = True
    publish_overlay: bool = True
    #: frames whose header stamp is older than this (node clock) are dropped; 0 disables the check
    max_age_ms: float = 500.0
    input_transport: str = "raw"
    #: TensorRT engine cache; empty = ~/.cache/mgcda_ros/engines
    engine_cache_dir: str = ""
    precision: str = "fp32"
    #: input QoS (defaults = sensor data: best effort, keep last 1)
    qos_reliability: str = "best_effort"
    qos_depth: int = 1
    #: largest accepted input image in pixels (bigger is rejected as an absurd size)
    max_input_pixels: int = 8192 * 8192
    #: seconds between repeated warnings about rejected input
    warn_throttle_s: float = 5.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name), type(field.default))
        _one_of("backend", self.backend, BACKENDS)
        _one_of("score", self.score, SCORES)
        _one_of("input_transport", self.input_transport, TRANSPORTS)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("qos_reliability", self.qos_reliability, RELIABILITIES)
        if not (self.device == "cpu" or self.device == "cuda" or _is_cuda_index(self.device)):
            _refuse("device", self.device, "'cpu', 'cuda' or 'cuda:N'")
        for name in ("input_width", "input_height"):
            value = getattr(self, name)
            if not SIZE_MULTIPLE <= value <= MAX_INPUT_SIDE or value % SIZE_MULTIPLE:
                _refuse(name, value, f"a multiple of {SIZE_MULTIPLE} in [{SIZE_MULTIPLE}, {MAX_INPUT_SIDE}] "
                        "(the network's downsampling)")
        for name in ("threshold", "overlay_alpha"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _refuse(name, getattr(self, name), "a number in [0, 1]")
        if not self.max_age_ms >= 0.0 or math.isinf(self.max_age_ms):
            _refuse("max_age_ms", self.max_age_ms, "a finite number >= 0 (0 disables the age check)")
        if not 1 <= self.qos_depth <= 10000:
            _refuse("qos_depth", self.qos_depth, "an integer in [1, 10000]")
        if self.max_input_pixels < 4:
            _refuse("max_input_pixels", self.max_input_pixels, "an integer >= 4")
        if not self.warn_throttle_s > 0.0:
            _refuse("warn_throttle_s", self.warn_throttle_s, "a number > 0")
        if self.score not in TRAINING_FREE and not self.model_path:
            _refuse("score", self.score, f"a training-free score ({', '.join(TRAINING_FREE)}) when model_path is "
                    "empty: the others need a trained dissimilarity network")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> NodeParams:
        """Build from a name -> value mapping; unknown names are refused (a typo would otherwise be ignored)."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {unknown}: expected names among {sorted(known)}")
        # ROS gives integers for floats written without a decimal point ("threshold: 1").
        floats = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, float)}
        coerced = {k: float(v) if k in floats and type(v) is int else v for k, v in values.items()}
        return cls(**coerced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(name: str, value: Any, expected: type) -> None:
    # bool is an int subclass: refuse True for an integer parameter and 1 for a boolean one.
    if type(value) is not expected:
        _refuse(name, value, f"a value of type {expected.__name__}, got {type(value).__name__}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _refuse(name, value, f"one of {', '.join(allowed)}")


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _refuse(name: str, value: Any, expected: str) -> None:
    raise ParameterError(f"parameter '{name}' = {value!r} is invalid: expected {expected}")
