"""Benchmark section ``gpu_runtimes``: PyTorch CUDA vs ONNX Runtime CUDA vs TensorRT fp32 and fp16 on the default
(training-free) pipeline.

Same exported graph and seeded input for every backend; each is warmed up (engine build or reuse from the engine
cache, allocator growth), then timed as the node calls it (host array in, host array out, so copies included).
Reported: median latency and the max abs difference against PyTorch on the CPU (float32, no TF32). A backend
that cannot run here gets a row saying why instead of a time; without a CUDA GPU the section returns one row
saying so.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from mgcda_core.benchmark.runtimes import SIZES, default_graph
from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.base import Runtime
from mgcda_core.runtime.factory import (
    DEFAULT_ENGINE_CACHE,
    FALLBACK_ERRORS,
    RuntimeOptions,
    make_runtime,
    tensorrt_unavailable_reason,
)
from mgcda_core.runtime.torch_runtime import TorchRuntime

DEVICE = "cuda:0"


def _backends(graph: torch.nn.Module, onnx_path: Path, size: tuple[int, int]) -> dict[str, Callable[[], Runtime]]:
    def tensorrt(precision: str) -> Runtime:
        options = RuntimeOptions(precision=precision, input_size=size, engine_cache_dir=DEFAULT_ENGINE_CACHE)
        return make_runtime("tensorrt", onnx_path, DEVICE, options)

    return {
        "torch cuda": lambda: make_runtime("torch", graph, DEVICE),
        "onnxruntime cuda": lambda: make_runtime("onnxruntime", onnx_path, DEVICE),
        "tensorrt fp32": lambda: tensorrt("fp32"),
        "tensorrt fp16": lambda: tensorrt("fp16"),
    }


def _time(runtime: Runtime, image: np.ndarray, repeats: int) -> tuple[np.ndarray, float]:
    output = runtime.run(image)
    for _ in range(2):
        runtime.run(image)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        runtime.run(image)
        samples.append(time.perf_counter() - start)
    return output, 1000.0 * statistics.median(samples)


def run(quick: bool = False) -> list[dict]:
    if not torch.cuda.is_available() and tensorrt_unavailable_reason(DEVICE) is not None:
        return [{"backend": "all", "note": f"skipped: no CUDA GPU ({tensorrt_unavailable_reason(DEVICE)})"}]
    repeats = 20 if quick else 100
    graph = default_graph()
    rows: list[dict] = []
    for height, width in SIZES[:1] if quick else SIZES:
        image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        reference = TorchRuntime(graph, "cpu").run(image)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "default.onnx"
            onnx.save(export_to_proto(graph, ExportConfig(height=height, width=width)), str(onnx_path))
            for name, make in _backends(graph, onnx_path, (height, width)).items():
                row: dict = {"graph": "default (ESPNetv2 max_logit)", "size": f"{height}x{width}", "backend": name}
                try:
                    runtime = make()
                    output, row["median_ms"] = _time(runtime, image, repeats)
                except FALLBACK_ERRORS as error:
                    rows.append({**row, "note": f"unavailable: {type(error).__name__}: {error}"})
                    continue
                row["max_abs_diff_vs_torch_cpu"] = float(np.abs(output - reference).max())
                row["max_abs_output"] = float(np.abs(reference).max())
                rows.append(row)
    return rows
