"""Runtimes behind one interface: ONNX Runtime and the factory on CPU; TensorRT where a GPU and TensorRT exist."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.base import Runtime
from mgcda_core.runtime.factory import RuntimeOptions, auto_choice, make_runtime
from mgcda_core.runtime.onnx_runtime import OnnxRuntime

SIZE = (64, 128)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.InstanceNorm2d(4)
        self.head = torch.nn.Conv2d(4, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.selu(self.norm(self.conv(F.avg_pool2d(image, 2))))
        return F.interpolate(self.head(x), size=image.shape[2:], mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny() -> Tiny:
    return Tiny().eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny: Tiny, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(export_to_proto(tiny, ExportConfig(height=SIZE[0], width=SIZE[1])), str(path))
    return path


def image(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, *SIZE), dtype=np.float32)


def expected(tiny: Tiny, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tiny(torch.from_numpy(x)).numpy()


def test_onnxruntime_runtime_matches_torch(tiny: Tiny, tiny_onnx: Path) -> None:
    runtime = OnnxRuntime(tiny_onnx, threads=1)
    assert isinstance(runtime, Runtime) and runtime.name == "onnxruntime" and runtime.device == "cpu"
    assert runtime.provider == "CPUExecutionProvider"
    x = image()
    assert np.abs(runtime.run(x) - expected(tiny, x)).max() <= 1e-5


def test_onnxruntime_refuses_bad_inputs(tiny_onnx: Path, tmp_path: Path) -> None:
    runtime = OnnxRuntime(tiny_onnx)
    with pytest.raises(ValueError, match="fixed input shape"):
        runtime.run(np.zeros((1, 3, 32, 64), np.float32))
    with pytest.raises(ValueError, match="expected float32 N x 3 x H x W"):
        runtime.run(np.zeros((1, 3, *SIZE), np.float64))
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxRuntime(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="threads"):
        OnnxRuntime(tiny_onnx, threads=0)


def test_onnx_without_the_image_input_is_refused_by_name(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, *SIZE])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 3, *SIZE])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["pixels"], ["score"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"inputs are \['pixels'\], expected exactly one named 'image'"):
        make_runtime("onnxruntime", path)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_onnxruntime_cuda_without_provider_says_so(tiny_onnx: Path) -> None:
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider"):
        OnnxRuntime(tiny_onnx, device="cuda:0")


def test_factory_backends_agree(tiny: Tiny, tiny_onnx: Path) -> None:
    x = image(seed=5)
    options = RuntimeOptions(input_size=SIZE)
    outputs = {
        "torch": make_runtime("torch", tiny, "cpu", options).run(x),
        "onnxruntime (graph)": make_runtime("onnxruntime", tiny, "cpu", options).run(x),
        "onnxruntime (file)": make_runtime("onnxruntime", tiny_onnx, "cpu", options).run(x),
    }
    reference = expected(tiny, x)
    for name, output in outputs.items():
        assert output.shape == (1, 1, *SIZE), name
        assert np.abs(output - reference).max() <= 1e-5, name


def test_auto_picks_the_fastest_available_and_logs_why(tiny: Tiny, tiny_onnx: Path, caplog) -> None:
    tensorrt_here = torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None
    name, skipped = auto_choice(tiny_onnx, "cpu")
    assert name == "onnxruntime" and skipped == ["tensorrt: device is 'cpu', TensorRT needs a CUDA device"]
    with caplog.at_level(logging.INFO, logger="mgcda_core.runtime.factory"):
        runtime = make_runtime("auto", tiny, "cpu", RuntimeOptions(input_size=SIZE))
    assert runtime.name == "onnxruntime"
    (message,) = [r.getMessage() for r in caplog.records if "runtime auto" in r.getMessage()]
    assert "auto -> onnxruntime on cpu" in message and "TensorRT needs a CUDA device" in message
    if not tensorrt_here and "CUDAExecutionProvider" not in ort.get_available_providers():
        name, skipped = auto_choice(tiny, "cuda:0")
        assert name == "torch" and [s.split(":")[0] for s in skipped] == ["tensorrt", "onnxruntime"]
        with pytest.raises(RuntimeError, match="no runtime can run .*tensorrt: .*onnxruntime: "):
            auto_choice(tiny_onnx, "cuda:0")


def test_factory_refuses_what_it_cannot_run(tiny: Tiny, tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        make_runtime("openvino", tiny)
    with pytest.raises(ValueError, match="device must be"):
        make_runtime("torch", tiny, "tpu")
    with pytest.raises(ValueError, match="torch runtime runs an in-memory graph"):
        make_runtime("torch", tiny_onnx)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ValueError, match="onnxruntime cannot run the TensorRT engine"):
        make_runtime("onnxruntime", engine)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match="must be .onnx or .engine"):
        make_runtime("onnxruntime", checkpoint)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="tensorrt runtime unavailable: device is 'cpu'"):
            make_runtime("tensorrt", tiny_onnx, "cpu")


# --- TensorRT: needs an NVIDIA GPU and the tensorrt package --------------------------------------------------

needs_tensorrt = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("tensorrt") is None,
    reason="TensorRT tests need a CUDA GPU and the tensorrt package (CI has neither; the ONNX side is tested on CPU)",
)


@needs_tensorrt
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("fp16", 2e-2)])
def test_tensorrt_engine_matches_torch_and_is_cached(tiny: Tiny, tiny_onnx: Path, tmp_path: Path,
                                                     precision: str, tolerance: float) -> None:
    from mgcda_core.export.tensorrt_builder import BuildConfig, build_engine_cached
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    shape = (1, 3, *SIZE)
    config = BuildConfig(precision=precision, min_shape=shape, opt_shape=shape, max_shape=shape,
                         timing_cache=tmp_path / "timing.cache")
    first = build_engine_cached(tiny_onnx, tmp_path / "cache", config)
    second = build_engine_cached(tiny_onnx, tmp_path / "cache", config)
    assert first.built and not second.built and first.data == second.data
    assert (tmp_path / "timing.cache").stat().st_size > 0
    runtime = TensorRTRuntime(first.path, "cuda:0")
    x = image(seed=9)
    assert np.abs(runtime.run(x) - expected(tiny, x)).max() <= tolerance


@needs_tensorrt
def test_tensorrt_refuses_an_engine_without_a_valid_sidecar(tmp_path: Path) -> None:
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"\x00" * 1024)
    with pytest.raises(ValueError, match="no sidecar"):
        TensorRTRuntime(engine, "cuda:0")
