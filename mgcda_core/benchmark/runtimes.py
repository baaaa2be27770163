"""Benchmark section ``runtimes``: PyTorch eager vs ONNX Runtime on CPU for the default (training-free) pipeline.

Both run the same exported graph on the same seeded inputs in the same process, interleaved per repetition so
machine load affects both alike; the table gives median latencies and the speed-up ratio torch / onnxruntime.
With ``MGCDA_ORT_PROFILE=DIR`` the ONNX Runtime per-operator profile (``enable_profiling``) is written there.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from mgcda_core.benchmark.host import cache_sharing, core_coupling
from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.onnx_runtime import OnnxRuntime
from mgcda_core.runtime.torch_runtime import TorchRuntime

SIZES = ((256, 512), (512, 1024))


def default_graph() -> torch.nn.Module:
    from mgcda_core.pipeline.graph import InferenceGraph
    from mgcda_core.pipeline.stages import InferenceStages

    return InferenceGraph(InferenceStages.default()).eval()


def _median_ms(samples: list[float]) -> float:
    return 1000.0 * statistics.median(samples)


def _profile(onnx_bytes: bytes, image: np.ndarray, directory: Path, tag: str, threads: int) -> str:
    """Run ONNX Runtime's per-operator profiler (enable_profiling) and return the JSON trace path."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(directory / f"ort_profile_{tag}")
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, {"image": image})
    return session.end_profiling()


def run(quick: bool = False) -> list[dict]:
    repeats = 3 if quick else 10
    sizes = SIZES[:1] if quick else SIZES
    graph = default_graph()
    torch_runtime = TorchRuntime(graph, "cpu")
    profile_dir = os.environ.get("MGCDA_ORT_PROFILE")
    default_threads = torch.get_num_threads()
    # One thread each, and each library's default: on a loaded machine multi-threaded OpenMP barriers in PyTorch
    # eager wait for descheduled threads, so the single-thread row is the load-robust comparison.
    thread_counts = sorted({1, default_threads})
    rows = []
    for height, width in sizes:
        proto = export_to_proto(graph, ExportConfig(height=height, width=width))
        image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        for threads in thread_counts:
            torch.set_num_threads(threads)
            ort_runtime = OnnxRuntime(proto, "cpu", threads=threads)
            torch_out, ort_out = torch_runtime.run(image), ort_runtime.run(image)  # warm-up (allocator growth)
            times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
            before = core_coupling()
            for _ in range(repeats):
                for name, runtime in (("torch", torch_runtime), ("onnxruntime", ort_runtime)):
                    start = time.perf_counter()
                    runtime.run(image)
                    times[name].append(time.perf_counter() - start)
            torch_ms, ort_ms = _median_ms(times["torch"]), _median_ms(times["onnxruntime"])
            row = {
                "graph": "default (ESPNetv2 max_logit)",
                "size": f"{height}x{width}",
                "threads": threads,
                "torch_ms": torch_ms,
                "onnxruntime_ms": ort_ms,
                "speedup_ort_vs_torch": torch_ms / ort_ms,
                "max_abs_diff": float(np.abs(torch_out - ort_out).max()),
                # two threads take up to 1.6x longer while a VM's vCPUs are split over two sockets (host.py)
                "cpus_share_cache": cache_sharing(before, core_coupling()),
            }
            if profile_dir:
                Path(profile_dir).mkdir(parents=True, exist_ok=True)
                row["ort_profile"] = _profile(proto.SerializeToString(), image, Path(profile_dir),
                                              f"{height}x{width}_t{threads}", threads)
            rows.append(row)
    torch.set_num_threads(default_threads)
    return rows
