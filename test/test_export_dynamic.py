"""Dynamic-size ONNX export of the default pipeline (embedded ESPNetv2, max-logit score): one export serves
several input sizes, agreeing with PyTorch at each; the fixed-size fast path of the model is left in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from mgcda_core.export.onnx_export import ExportConfig, allowed_difference, export_onnx, float32_error, sidecar_path
from mgcda_core.pipeline.detector import build_graph
from mgcda_core.runtime.onnx_runtime import OnnxRuntime

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def pyramid_flags(graph: torch.nn.Module) -> list[bool]:
    return [m.symbolic_shapes for m in graph.modules() if isinstance(getattr(m, "symbolic_shapes", None), bool)]


def test_default_graph_exports_dynamically_and_agrees_with_torch_at_other_sizes(tmp_path: Path) -> None:
    graph = build_graph("max_logit")
    assert pyramid_flags(graph) == [False] * 4  # ESPNetv2's four pyramid pools, fixed-size path by default
    path = tmp_path / "dynamic.onnx"
    report = export_onnx(graph, path, ExportConfig(height=64, width=128, dynamic=True))
    assert pyramid_flags(graph) == [False] * 4  # switched on only while tracing

    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["dynamic"] is True and sidecar["description"]["dynamic_check"]["size"] == [2, 3, 96, 192]
    assert report.max_abs_diff_onnxruntime_vs_torch <= report.max_abs_diff_allowed

    # sizes whose pooling bins differ from the export size's (64x128: 5-wide pyramid floor everywhere)
    runtime = OnnxRuntime(model, "cpu")
    rng = np.random.default_rng(1)
    for height, width in ((128, 256), (160, 96)):
        image = rng.random((1, 3, height, width), dtype=np.float32)
        expected, error = float32_error(graph, image)
        actual = runtime.run(image)
        assert actual.shape == expected.shape == (1, 1, height, width)
        assert np.abs(actual - expected).max() <= allowed_difference(expected, error)


def test_uncertainty_prefix_exports_dynamically_and_agrees_at_another_size(tmp_path: Path) -> None:
    """The perceptual-difference size follows the input (no frozen Python ints), so the maps the dissimilarity
    network consumes are right at a size other than the export size."""
    graph = build_graph("max_logit", output="uncertainty")
    path = tmp_path / "uncertainty.onnx"
    export_onnx(graph, path, ExportConfig(height=64, width=128, dynamic=True))
    image = np.random.default_rng(2).random((1, 3, 96, 160), dtype=np.float32)
    expected, error = float32_error(graph, image)
    actual = OnnxRuntime(onnx.load(str(path)), "cpu").run(image)
    assert actual.shape == expected.shape == (1, 3, 96, 160)
    assert np.abs(actual - expected).max() <= allowed_difference(expected, error)
