"""``make_runtime``: one entry point for every backend, by name or ``auto``.

``model`` is what the backend runs: an in-memory inference graph (``torch.nn.Module``), an exported ``.onnx``
file, or a TensorRT ``.engine`` file. A graph given to onnxruntime or tensorrt is exported first (pinned exporter,
``mgcda_core.export.onnx_export``); an ONNX given to tensorrt goes through the verified engine cache.

``auto`` order, fastest first: tensorrt (NVIDIA GPU + TensorRT installed; fused fp16/fp32 kernels), then
onnxruntime (CUDA provider on a GPU; on CPU its fused graph beats PyTorch eager, see the ``runtimes`` benchmark
and docs/DEPLOYMENT.md), then torch. The choice and the reason each faster backend was skipped are logged.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.base import Runtime

LOG = logging.getLogger(__name__)

NAMES = ("torch", "onnxruntime", "tensorrt", "auto")
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "mgcda" / "engines"

Model = torch.nn.Module | str | Path


@dataclass(frozen=True)
class RuntimeOptions:
    """Backend settings beyond name and device."""

    precision: str = "fp32"  # tensorrt only
    engine_cache_dir: str | Path = DEFAULT_ENGINE_CACHE  # "~" is expanded
    input_size: tuple[int, int] = (256, 512)  # (H, W) used when a graph must be exported or an engine built
    threads: int | None = None  # onnxruntime intra-op threads


def _kind(model: Model) -> str:
    if isinstance(model, torch.nn.Module):
        return "graph"
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".engine", ".plan", ".trt"):
        return "engine"
    raise ValueError(f"model file {path} must be .onnx or .engine (a checkpoint is loaded by the Detector)")


def tensorrt_unavailable_reason(device: str) -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    if not device.startswith("cuda"):
        return f"device is {device!r}, TensorRT needs a CUDA device"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch"
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed"
    return None


def onnxruntime_unavailable_reason(device: str) -> str | None:
    if device.startswith("cuda") and "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime has no CUDAExecutionProvider (has {ort.get_available_providers()})"
    return None


def _export(model: torch.nn.Module, options: RuntimeOptions) -> onnx.ModelProto:
    LOG.info("exporting the inference graph to ONNX at %dx%d", *options.input_size)
    return export_to_proto(model, ExportConfig(height=options.input_size[0], width=options.input_size[1]))


def _make_torch(model: Model, device: str, options: RuntimeOptions) -> Runtime:
    from mgcda_core.runtime.torch_runtime import TorchRuntime

    if _kind(model) != "graph":
        raise ValueError(f"the torch runtime runs an in-memory graph, not the file {model}")
    assert isinstance(model, torch.nn.Module)  # _kind says "graph" only for a module
    return TorchRuntime(model, device)


def _make_onnxruntime(model: Model, device: str, options: RuntimeOptions) -> Runtime:
    from mgcda_core.runtime.onnx_runtime import OnnxRuntime

    kind = _kind(model)
    if kind == "engine":
        raise ValueError(f"onnxruntime cannot run the TensorRT engine {model}; give the .onnx file")
    source = _export(model, options) if isinstance(model, torch.nn.Module) else model  # kind == "graph"
    return OnnxRuntime(source, device=device, threads=options.threads)


def _make_tensorrt(model: Model, device: str, options: RuntimeOptions) -> Runtime:
    from mgcda_core.export.tensorrt_builder import BuildConfig, build_engine_cached, profile_for
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    reason = tensorrt_unavailable_reason(device)
    if reason:
        raise RuntimeError(f"tensorrt runtime unavailable: {reason}")
    kind = _kind(model)
    if kind == "engine":
        assert not isinstance(model, torch.nn.Module)  # _kind says "engine" only for a file path
        return TensorRTRuntime(model, device)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, torch.nn.Module):  # kind == "graph"
            onnx_path = Path(tmp) / "graph.onnx"
            onnx.save(_export(model, options), str(onnx_path))
        else:
            onnx_path = Path(model)
        proto = onnx.load(str(onnx_path), load_external_data=False)
        minimum, optimum, maximum = profile_for(proto, *options.input_size)
        cache_dir = Path(options.engine_cache_dir).expanduser()
        config = BuildConfig(precision=options.precision, min_shape=minimum, opt_shape=optimum, max_shape=maximum,
                             timing_cache=cache_dir / "timing.cache")
        cached = build_engine_cached(onnx_path, cache_dir, config, device)
    return TensorRTRuntime(cached.data, device)


_MAKERS = {"torch": _make_torch, "onnxruntime": _make_onnxruntime, "tensorrt": _make_tensorrt}


def auto_choice(model: Model, device: str) -> tuple[str, list[str]]:
    """(backend ``auto`` picks for ``model`` on ``device``, reasons the faster ones were skipped)."""
    kind = _kind(model)
    if kind == "engine":
        return "tensorrt", []
    skipped: list[str] = []
    reason = tensorrt_unavailable_reason(device)
    if reason is None:
        return "tensorrt", skipped
    skipped.append(f"tensorrt: {reason}")
    reason = onnxruntime_unavailable_reason(device)
    if reason is None:
        return "onnxruntime", skipped
    skipped.append(f"onnxruntime: {reason}")
    if kind == "onnx":
        raise RuntimeError(f"no runtime can run {model} on {device}: " + "; ".join(skipped))
    return "torch", skipped


def make_runtime(name: str, model: Model, device: str = "cpu", options: RuntimeOptions | None = None) -> Runtime:
    """The runtime ``name`` ("torch" | "onnxruntime" | "tensorrt" | "auto") over ``model`` on ``device``."""
    if name not in NAMES:
        raise ValueError(f"runtime must be one of {NAMES}, got {name!r}")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:index]', got {device!r}")
    options = options or RuntimeOptions()
    if name == "auto":
        name, skipped = auto_choice(model, device)
        why = "; ".join(skipped) if skipped else "it is the fastest backend and is available"
        LOG.info("runtime auto -> %s on %s (%s)", name, device, why)
    return _MAKERS[name](model, device, options)
