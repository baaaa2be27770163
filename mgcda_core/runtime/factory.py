"""``make_runtime``: one entry point for every backend, by name or ``auto``.

``model`` is what the backend runs: an in-memory inference graph (``torch.nn.Module``), an exported ``.onnx``
file, or a TensorRT ``.engine`` file. A graph given to onnxruntime or tensorrt is exported first (pinned exporter,
``mgcda_core.export.onnx_export``); an ONNX given to tensorrt goes through the verified engine cache.

``auto`` tries, fastest first: tensorrt (CUDA device with a GPU that cuda-python sees; fused fp16/fp32 kernels),
onnxruntime on that device (CUDA provider), torch on that device (a graph, with a CUDA build of PyTorch), and
finally onnxruntime on the CPU (on CPU its fused graph beats PyTorch eager, see the ``runtimes`` benchmark and
docs/DEPLOYMENT.md). A backend that cannot start (not installed, no GPU, parser error, failed build) hands over to
the next; the choice is logged once, on one line naming why each faster backend was skipped. A backend named
explicitly is not replaced: its failure is raised.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort
import torch

from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.base import Runtime
from mgcda_core.utils import cuda_memory

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
    stop_spinning_after_run: bool = True  # onnxruntime: threads stop at the end of each run (see OnnxRuntime)
    #: onnxruntime on CPU: calls that may run at once (a ``LanedRuntime`` when > 1 and the process may use two
    #: CPUs or more; each call then runs alone on every thread or beside another on a share of them)
    frames_in_flight: int = 1

    def __post_init__(self) -> None:
        if self.frames_in_flight < 1:
            raise ValueError(f"frames_in_flight must be >= 1, got {self.frames_in_flight}")


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
    """Why TensorRT cannot run on ``device`` here (not a CUDA device, no GPU, no cuda-python), or None."""
    if not device.startswith("cuda"):
        return f"device is {device!r}, TensorRT needs a CUDA device"
    try:
        cuda_memory.device_identity(device)
    except (ImportError, cuda_memory.CudaError) as error:
        return f"no usable CUDA GPU: {error}"
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

    if not isinstance(model, torch.nn.Module):
        _kind(model)  # a missing file is reported as such
        raise ValueError(f"the torch runtime runs an in-memory graph, not the file {model}")
    assert isinstance(model, torch.nn.Module)  # _kind says "graph" only for a module
    return TorchRuntime(model, device)


def _make_onnxruntime(model: Model, device: str, options: RuntimeOptions) -> Runtime:
    from mgcda_core.runtime.onnx_runtime import OnnxRuntime

    if _kind(model) == "engine":
        raise ValueError(f"onnxruntime cannot run the TensorRT engine {model}; give the .onnx file")
    source = _export(model, options) if isinstance(model, torch.nn.Module) else model
    threads = options.threads if options.threads is not None else len(allowed_cpus())
    if device != "cpu" or options.frames_in_flight == 1 or threads < 2:
        return OnnxRuntime(source, device=device, threads=options.threads,
                           stop_spinning_after_run=options.stop_spinning_after_run)
    from mgcda_core.runtime.lanes import LanedRuntime

    proto = source if isinstance(source, onnx.ModelProto) else onnx.load(str(source))
    lanes = min(options.frames_in_flight, threads)
    # alone: the threads asked for (ONNX Runtime's default, one per physical core, when None), as without lanes
    sessions = [OnnxRuntime(proto, device=device, threads=n, stop_spinning_after_run=options.stop_spinning_after_run)
                for n in [options.threads] + [threads // lanes] * lanes]
    return LanedRuntime(sessions[0], sessions[1:])


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask; every CPU where the platform has no such mask)."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def _make_tensorrt(model: Model, device: str, options: RuntimeOptions) -> Runtime:
    from mgcda_core.export.tensorrt_builder import BuildConfig, build_engine_cached, profile_for
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    reason = tensorrt_unavailable_reason(device)
    if reason:
        raise RuntimeError(f"tensorrt runtime unavailable: {reason}")
    if not isinstance(model, torch.nn.Module) and _kind(model) == "engine":
        return TensorRTRuntime(model, device)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, torch.nn.Module):
            onnx_path = Path(tmp) / "graph.onnx"
            onnx.save(_export(model, options), str(onnx_path))
        else:
            onnx_path = Path(model)
        proto = onnx.load(str(onnx_path), load_external_data=False)
        minimum, optimum, maximum = profile_for(proto, *options.input_size)
        cache_dir = Path(options.engine_cache_dir).expanduser()
        config = BuildConfig(precision=options.precision, min_shape=minimum, opt_shape=optimum, max_shape=maximum,
                             timing_cache_dir=cache_dir)
        cached, _ = build_engine_cached(onnx_path, cache_dir, config, device)
    return TensorRTRuntime(cached.data, device)


_MAKERS = {"torch": _make_torch, "onnxruntime": _make_onnxruntime, "tensorrt": _make_tensorrt}
# What a backend raises when it cannot start here (missing package or library, no GPU, parser or build failure,
# a model it cannot take): ``auto`` then tries the next one.
FALLBACK_ERRORS = (ImportError, OSError, RuntimeError, ValueError)


Candidate = tuple[str, str, str | None]  # (backend, device, why it is skipped up front or None)


def auto_candidates(model: Model, device: str) -> list[Candidate]:
    """The backends ``auto`` considers, fastest first, each with the reason it is skipped up front (or None)."""
    kind = _kind(model)
    if kind == "engine":
        return [("tensorrt", device, None)]
    candidates: list[Candidate] = [("tensorrt", device, tensorrt_unavailable_reason(device))]
    if device != "cpu":
        candidates.append(("onnxruntime", device, onnxruntime_unavailable_reason(device)))
        if kind == "graph":
            candidates.append(("torch", device, None if torch.cuda.is_available() else "this PyTorch has no CUDA"))
    candidates.append(("onnxruntime", "cpu", None))
    return candidates


def _make_auto(model: Model, device: str, options: RuntimeOptions) -> Runtime:
    reasons: list[str] = []
    failed = False
    for backend, where, skipped in auto_candidates(model, device):
        if skipped is not None:
            reasons.append(f"{backend} on {where}: {skipped}")
            continue
        try:
            runtime = _MAKERS[backend](model, where, options)
        except FALLBACK_ERRORS as error:
            reasons.append(f"{backend} on {where}: {type(error).__name__}: {error}")
            failed = True
            continue
        # A warning when something failed or the requested device could not be used; else information.
        level = logging.WARNING if failed or where != device else logging.INFO
        LOG.log(level, "runtime auto -> %s on %s (%s)", backend, where,
                "; ".join(reasons) if reasons else "the fastest backend, available")
        return runtime
    raise RuntimeError(f"runtime auto: no backend can run {model} on {device}: " + "; ".join(reasons))


def make_runtime(name: str, model: Model, device: str = "cpu", options: RuntimeOptions | None = None) -> Runtime:
    """The runtime ``name`` ("torch" | "onnxruntime" | "tensorrt" | "auto") over ``model`` on ``device``."""
    if name not in NAMES:
        raise ValueError(f"runtime must be one of {NAMES}, got {name!r}")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:index]', got {device!r}")
    options = options or RuntimeOptions()
    if name == "auto":
        return _make_auto(model, device, options)
    return _MAKERS[name](model, device, options)
