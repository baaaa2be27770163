"""The node's parameters: one typed dataclass, validated as a whole before anything starts or changes.

Each field carries what ROS needs to describe it (``ParameterSpec``: description, range, whether it may change at
run time); ``mgcda_ros.ros_parameters`` turns that into one ``ParameterDescriptor`` per parameter, and the same
ranges are what ``NodeParams`` checks, so the descriptor and the validation cannot disagree.
``config/anomaly.yaml`` mirrors the defaults.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgcda_core.errors import ConfigError
from mgcda_core.model.shipped import SHIPPED_SCORE
from mgcda_core.pipeline.detector import SIZE_MULTIPLE
from mgcda_core.pipeline.scores import SCORES
from mgcda_core.utils.images import DEFAULT_MAX_PIXELS, HARD_MAX_PIXELS

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
TRANSPORTS = ("raw", "compressed")
PRECISIONS = ("fp32", "fp16")
RELIABILITIES = ("auto", "best_effort", "reliable")
MAX_INPUT_SIDE = 4096
#: bit depths a 16-bit encoding may carry (0: detect from each frame's largest value)
BIT_DEPTHS = (0, *range(8, 17))
#: where TensorRT engines are cached when ``engine_cache_dir`` is empty (the node passes it explicitly)
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "mgcda_ros" / "engines"


class ParameterError(ConfigError):
    """A parameter value the node refuses; the message names the parameter, the value and what is allowed."""


@dataclass(frozen=True)
class ParameterSpec:
    """How a parameter is described to ROS: text, allowed range (inclusive; ``step`` for integers), and whether
    a change takes effect on the next frame (``runtime``) or needs a restart (read-only in ROS)."""

    description: str
    runtime: bool = False
    low: float | None = None
    high: float | None = None
    step: int = 0
    choices: tuple[str, ...] = ()
    note: str = ""  # why the range is what it is, added to the words of :meth:`constraints`

    def constraints(self) -> str:
        """The allowed values in words (a descriptor's ``additional_constraints`` and refusal messages)."""
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        if self.low is None or self.high is None:
            return ""
        span = f"[{_number(self.low)}, {_number(self.high)}]"
        words = f"a multiple of {self.step} in {span}" if self.step > 1 else f"a number in {span}"
        return f"{words} ({self.note})" if self.note else words


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _param(default: Any, description: str, **spec: Any) -> Any:
    return dataclasses.field(default=default, metadata={"spec": ParameterSpec(description, **spec)})


@dataclass(frozen=True)
class NodeParams:
    """Parameters of ``anomaly_node`` (docs/ROS.md lists them with their defaults)."""

    backend: str = _param("auto", "inference runtime; auto = fastest available for model_path and device",
                          choices=BACKENDS)
    model_path: str = _param("", "trained checkpoint (.pt), ONNX graph (.onnx) or TensorRT engine; empty = the "
                                 "default detector")
    device: str = _param("auto", "cpu, cuda, cuda:N, or auto (cuda when PyTorch sees a CUDA GPU, else cpu)")
    input_width: int = _param(512, "network input width; the image is resized to it and the score back",
                              low=SIZE_MULTIPLE, high=MAX_INPUT_SIDE, step=SIZE_MULTIPLE)
    input_height: int = _param(256, "network input height", low=SIZE_MULTIPLE, high=MAX_INPUT_SIDE,
                               step=SIZE_MULTIPLE)
    score: str = _param(SHIPPED_SCORE, "anomaly score: dissimilarity/ensemble of the trained network (model_path, "
                                       "or the one shipped in the package), or a training-free one", choices=SCORES)
    threshold: float = _param(0.5, "anomaly_mask = calibrated score >= threshold", runtime=True, low=0.0, high=1.0)
    overlay_alpha: float = _param(0.5, "tint strength of anomalous pixels in anomaly_overlay", runtime=True,
                                  low=0.0, high=1.0)
    publish_score: bool = _param(True, "publish anomaly_score (only while it has subscribers)", runtime=True)
    publish_overlay: bool = _param(True, "publish anomaly_overlay (computed only while it has subscribers)",
                                   runtime=True)
    max_age_ms: float = _param(500.0, "drop frames whose header stamp is older than this on the node's clock; "
                                      "0 disables the check", runtime=True, low=0.0, high=3_600_000.0)
    enable: bool = _param(True, "false: incoming frames are counted and ignored (same as the ~/enable service)",
                          runtime=True)
    input_transport: str = _param("raw", "raw: subscribe image; compressed: subscribe image/compressed",
                                  choices=TRANSPORTS)
    frames_in_flight: int = _param(2, "onnxruntime on a CPU: frames worked on at once. Above 1, each frame runs "
                                      "alone on every thread while that keeps up with the camera (the lowest "
                                      "latency), side by side on a share of the threads each when it does not "
                                      "(more frames per second); 1: always one at a time. Other runtimes: one",
                                   low=1, high=8, step=1)
    engine_cache_dir: str = _param("", f"TensorRT engine cache; empty = {DEFAULT_ENGINE_CACHE}")
    precision: str = _param("fp32", "TensorRT precision", choices=PRECISIONS)
    qos_reliability: str = _param("auto", "input reliability; auto = reliable when every discovered publisher is "
                                          "reliable, else best effort (re-checked as publishers come and go)",
                                  choices=RELIABILITIES)
    qos_depth: int = _param(1, "input queue depth (keep last)", low=1, high=10000, step=1)
    input_bit_depth: int = _param(0, "significant bits of 16-bit encodings (mono16, rgb16, bgr16); 0 = detect "
                                     "from each frame's largest value (8, 10, 12, 14 or 16)", runtime=True,
                                  low=0, high=16, step=1)
    max_input_pixels: int = _param(DEFAULT_MAX_PIXELS, "larger input images are rejected from their header, before "
                                                       "any decoding", runtime=True, low=4, high=HARD_MAX_PIXELS,
                                   step=1, note=f"{HARD_MAX_PIXELS} = 8192 x 8192 is a hard ceiling: a frame costs "
                                                "the node tens of bytes a pixel")
    warn_throttle_s: float = _param(5.0, "minimum seconds between repeated warnings about rejected or stale input",
                                    runtime=True, low=0.01, high=3600.0)
    input_timeout_s: float = _param(3.0, "diagnostics WARN (and a log line) when no frame arrived for this long",
                                    runtime=True, low=0.1, high=3600.0)
    diagnostics_window_s: float = _param(10.0, "errors, stale and rejected frames raise the diagnostics level "
                                               "while they occurred within this many seconds", runtime=True,
                                         low=1.0, high=3600.0)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            _check_type(field.name, value, type(field.default))
            _check_spec(field.name, value, field.metadata["spec"])
        if not (self.device in ("auto", "cpu", "cuda") or _is_cuda_index(self.device)):
            _refuse("device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.input_bit_depth not in BIT_DEPTHS:
            _refuse("input_bit_depth", self.input_bit_depth, "0 (detect) or a bit depth in [8, 16]")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> NodeParams:
        """Build from a name -> value mapping; unknown names are refused (a typo would otherwise be ignored)."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {unknown}: expected names among {sorted(known)}")
        # ROS gives integers for floats written without a decimal point ("threshold: 1").
        floats = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, float)}
        coerced: dict[str, Any] = {k: float(v) if k in floats and type(v) is int else v for k, v in values.items()}
        return cls(**coerced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def specs(cls) -> dict[str, ParameterSpec]:
        """Name -> :class:`ParameterSpec` of every parameter, in declaration order."""
        return {field.name: field.metadata["spec"] for field in dataclasses.fields(cls)}

    def engine_cache(self) -> Path:
        """The TensorRT engine cache folder this node uses ("~" expanded)."""
        return Path(self.engine_cache_dir).expanduser() if self.engine_cache_dir else DEFAULT_ENGINE_CACHE


def _check_type(name: str, value: Any, expected: type) -> None:
    # bool is an int subclass: refuse True for an integer parameter and 1 for a boolean one.
    if type(value) is not expected:
        _refuse(name, value, f"a value of type {expected.__name__}, got {type(value).__name__}")


def _check_spec(name: str, value: Any, spec: ParameterSpec) -> None:
    if spec.choices and value not in spec.choices:
        _refuse(name, value, spec.constraints())
    if spec.low is None or spec.high is None:
        return
    in_range = math.isfinite(value) and spec.low <= value <= spec.high
    if not in_range or (spec.step > 1 and (value - spec.low) % spec.step):
        _refuse(name, value, spec.constraints())


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _refuse(name: str, value: Any, expected: str) -> None:
    raise ParameterError(f"parameter '{name}' = {value!r} is invalid: expected {expected}")
