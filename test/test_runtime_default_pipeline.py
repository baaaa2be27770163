"""The default pipeline (the network shipped in the package with its score, as ``Detector.default()``) exported with
``python -m mgcda_core.export`` (no arguments but --onnx) runs the same under PyTorch and ONNX Runtime, at graph
level and through the Detector."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from mgcda_core.export.__main__ import main
from mgcda_core.export.onnx_export import allowed_difference, float32_error
from mgcda_core.model.shipped import SHIPPED_SCORE
from mgcda_core.pipeline.detector import Detector, build_graph
from mgcda_core.runtime.factory import make_runtime
from mgcda_core.runtime.onnx_runtime import OnnxRuntime
from mgcda_core.runtime.torch_runtime import TorchRuntime
from mgcda_core.utils.images import read_rgb

SUPPORTED_OPS_FILE = Path(__file__).resolve().parents[1] / "mgcda_core" / "export" / "tensorrt_supported_ops.txt"
# A real road frame (640x360, not the network size): on uniform noise the segmentation sits at near-ties where
# float32 rounding flips the arg-max, and the one-hot semantic map then moves the dissimilarity by up to 0.04 on
# ~10 % of the pixels (measured); on the four demo road frames PyTorch and ONNX Runtime agree within 5e-5.
ROAD_FRAME = Path(__file__).resolve().parents[1] / "mgcda_ros" / "assets" / "road_anomaly" / "frames" / \
    "animals22_red_fox_on_road.jpg"


@pytest.fixture(scope="module")
def default_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("default") / "default.onnx"
    assert main(["--onnx", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def torch_runtime() -> TorchRuntime:
    return TorchRuntime(build_graph(SHIPPED_SCORE), "cpu")


def test_written_atomically_with_a_sidecar(default_onnx: Path) -> None:
    assert sorted(p.name for p in default_onnx.parent.iterdir()) == ["default.onnx", "default.onnx.json"]
    model = onnx.load(str(default_onnx))
    sidecar = json.loads(default_onnx.with_name("default.onnx.json").read_text())
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert sidecar["inputs"] == [{"name": graph_input.name, "dtype": "float32",
                                  "shape": [d.dim_value for d in graph_input.type.tensor_type.shape.dim]}]
    assert sidecar["inputs"][0]["name"] == "image" and sidecar["inputs"][0]["shape"] == [1, 3, 256, 512]
    assert sidecar["outputs"][0]["name"] == graph_output.name == "score"
    assert sidecar["outputs"][0]["shape"] == [1, 1, 256, 512]
    assert sidecar["opset"] == [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0] == 17
    description = sidecar["description"]
    assert description["score"] == SHIPPED_SCORE == "dissimilarity" and description["checkpoint"] is None
    assert description["architecture"]["encoder"] == "efficientnet_lite0"  # the shipped network is in the graph
    assert sidecar["max_abs_diff_onnxruntime_vs_torch"] <= sidecar["max_abs_diff_allowed"]


def test_every_operator_is_in_the_tensorrt_list(default_onnx: Path) -> None:
    supported = {line.strip() for line in SUPPORTED_OPS_FILE.read_text().splitlines()
                 if line.strip() and not line.startswith("#")}
    model = onnx.load(str(default_onnx))
    used = {node.op_type for node in model.graph.node}
    assert used <= supported, used - supported
    assert {node.domain for node in model.graph.node} <= {""}


def test_onnxruntime_matches_torch_at_256x512(default_onnx: Path, torch_runtime: TorchRuntime) -> None:
    image = Detector(torch_runtime, SHIPPED_SCORE).preprocess(read_rgb(ROAD_FRAME))
    onnx_runtime = OnnxRuntime(default_onnx)
    expected, actual = torch_runtime.run(image), onnx_runtime.run(image)
    assert actual.shape == expected.shape == (1, 1, 256, 512)
    assert expected.std() > 0.1 and expected.max() > 0.9  # a real score map with its anomaly, not a constant
    _, error = float32_error(torch_runtime.graph, image)
    assert np.abs(actual - expected).max() <= allowed_difference(expected, error)


def test_detectors_agree_across_runtimes(default_onnx: Path, torch_runtime: TorchRuntime, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mgcda_core.runtime.factory"):
        chosen = make_runtime("auto", default_onnx, "cpu")
    assert chosen.name == "onnxruntime"
    assert any("auto -> onnxruntime" in r.getMessage() and "tensorrt on cpu:" in r.getMessage() for r in caplog.records)
    rgb = read_rgb(ROAD_FRAME)
    by_torch = Detector(torch_runtime, SHIPPED_SCORE)
    by_onnx = Detector(chosen, SHIPPED_SCORE)
    raw_torch, raw_onnx = by_torch.raw_score(rgb), by_onnx.raw_score(rgb)
    assert raw_torch.shape == raw_onnx.shape == rgb.shape[:2] == (360, 640)
    # Bilinear resizing takes convex combinations and the calibration (identity, clipped to [0, 1]) has slope <= 1,
    # so neither enlarges the network outputs' difference, whose float32 bound is the graph's.
    network_output, error = float32_error(torch_runtime.graph, by_torch.preprocess(rgb))
    bound = allowed_difference(network_output, error)
    assert np.abs(raw_torch - raw_onnx).max() <= bound
    assert np.abs(by_torch(rgb) - by_onnx(rgb)).max() <= bound
    assert by_onnx.info["backend"] == "onnxruntime"
