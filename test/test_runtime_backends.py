"""Runtimes behind one interface: ONNX Runtime and the factory on CPU; TensorRT where a GPU and TensorRT exist."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from tensorrt_stand_in import StandIn

from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.base import Runtime
from mgcda_core.runtime.factory import RuntimeOptions, auto_candidates, make_runtime, tensorrt_unavailable_reason
from mgcda_core.runtime.onnx_runtime import OnnxRuntime
from mgcda_core.utils import cuda_memory

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


def _cpu_ms_while_idle_after_a_run(runtime: OnnxRuntime, x: np.ndarray) -> float:
    """This process's CPU time (ms) during a 50 ms sleep right after ``runtime.run``: what its threads burn."""
    runtime.run(x)
    start = time.process_time()
    time.sleep(0.05)
    return 1000 * (time.process_time() - start)


def test_onnxruntime_threads_stop_after_a_run_unless_told_to_spin(tmp_path: Path) -> None:
    # enough work per run that ONNX Runtime hands part of it to its worker thread
    wide = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 1, 3, padding=1))
    path = tmp_path / "wide.onnx"
    onnx.save(export_to_proto(wide.eval(), ExportConfig(height=128, width=256)), str(path))
    x = np.random.default_rng(0).random((1, 3, 128, 256), dtype=np.float32)
    spinning = OnnxRuntime(path, threads=2, stop_spinning_after_run=False)  # ONNX Runtime's own default
    default_ms = min(_cpu_ms_while_idle_after_a_run(spinning, x) for _ in range(3))
    del spinning  # its pool must not burn CPU during the next measurement
    stopping = OnnxRuntime(path, threads=2)
    stop_ms = max(_cpu_ms_while_idle_after_a_run(stopping, x) for _ in range(3))
    assert stopping.session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    if default_ms < 10.0:
        pytest.skip(f"this ONNX Runtime did not spin after a run here ({default_ms:.1f} ms of CPU in 50 ms idle)")
    assert stop_ms < default_ms / 3, (stop_ms, default_ms)


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


def auto_messages(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "runtime auto" in r.getMessage()]


def test_auto_on_cpu_picks_onnxruntime_and_logs_why(tiny: Tiny, tiny_onnx: Path, caplog) -> None:
    assert auto_candidates(tiny_onnx, "cpu") == [
        ("tensorrt", "cpu", "device is 'cpu', TensorRT needs a CUDA device"), ("onnxruntime", "cpu", None)]
    with caplog.at_level(logging.INFO, logger="mgcda_core.runtime.factory"):
        runtime = make_runtime("auto", tiny, "cpu", RuntimeOptions(input_size=SIZE))
    assert runtime.name == "onnxruntime" and runtime.device == "cpu"
    assert auto_messages(caplog) == [
        (logging.INFO, "runtime auto -> onnxruntime on cpu (tensorrt on cpu: device is 'cpu', TensorRT needs a CUDA "
                       "device)")]


GPU_HERE = tensorrt_unavailable_reason("cuda:0") is None


@pytest.mark.skipif(GPU_HERE, reason="a CUDA GPU is visible: this checks the fallback on a machine without one")
def test_auto_without_a_gpu_falls_back_to_onnxruntime_on_cpu_with_one_warning(tiny_onnx: Path, caplog) -> None:
    """The real cuda-python answers here (no driver / no device); ``auto`` says so once and runs on the CPU."""
    with caplog.at_level(logging.INFO, logger="mgcda_core.runtime.factory"):
        runtime = make_runtime("auto", tiny_onnx, "cuda:0", RuntimeOptions(input_size=SIZE))
    assert runtime.name == "onnxruntime" and runtime.device == "cpu"
    ((level, message),) = auto_messages(caplog)
    assert level == logging.WARNING and message.startswith("runtime auto -> onnxruntime on cpu (tensorrt on cuda:0: no "
                                                           "usable CUDA GPU: cudaGetDeviceCount failed: cudaError")
    x = image(seed=3)
    assert np.abs(runtime.run(x) - OnnxRuntime(tiny_onnx).run(x)).max() == 0.0
    with pytest.raises(RuntimeError, match="tensorrt runtime unavailable: no usable CUDA GPU: cudaGetDeviceCount"):
        make_runtime("tensorrt", tiny_onnx, "cuda:0")


def test_cuda_device_names_are_checked() -> None:
    assert [cuda_memory.device_index(d) for d in ("cuda", "cuda:0", "cuda:3")] == [0, 0, 3]
    for bad in ("cpu", "cuda:x", "gpu:0"):
        with pytest.raises(ValueError, match=f"expected a CUDA device 'cuda' or 'cuda:<index>', got '{bad}'"):
            cuda_memory.device_index(bad)


@pytest.mark.skipif(GPU_HERE, reason="a CUDA GPU is visible: this checks the message on a machine without one")
def test_tensorrt_runtime_without_a_gpu_says_so(tmp_path: Path) -> None:
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    with pytest.raises(cuda_memory.CudaError, match=r"cudaGetDeviceCount failed: cudaError\w+ \("):
        TensorRTRuntime(b"engine bytes", "cuda:0")


@pytest.fixture
def stand_in_gpu(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """A GPU as cuda-python would report it and the stand-in ``tensorrt``: the build path runs up to TensorRT."""
    monkeypatch.setattr(cuda_memory, "device_identity", lambda device="cuda:0": ("Stand-in GPU", "8.7"))
    monkeypatch.setattr(cuda_memory, "use_device", lambda device: None)
    trt = StandIn("10.3.0", "8.7")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def fail_parse(trt: StandIn, monkeypatch: pytest.MonkeyPatch) -> tuple[type[Exception], str]:
    trt.parse_errors = ["Slice_4: axes must be an initializer"]
    return RuntimeError, "TensorRT's ONNX parser refused the model: Slice_4: axes must be an initializer"


def fail_build(trt: StandIn, monkeypatch: pytest.MonkeyPatch) -> tuple[type[Exception], str]:
    trt.build_results = [False, False]  # the auto attempt, then the explicit one
    return RuntimeError, "TensorRT failed to build the engine"


def fail_import(trt: StandIn, monkeypatch: pytest.MonkeyPatch) -> tuple[type[Exception], str]:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # what `import tensorrt` meets when it is not installed
    return ImportError, "TensorRT is not installed"


@pytest.mark.parametrize("fail", [fail_parse, fail_build, fail_import], ids=["parser", "build", "import"])
def test_auto_falls_back_when_tensorrt_cannot_start_and_explicit_tensorrt_fails_loudly(
        stand_in_gpu: StandIn, tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, fail) -> None:
    error_type, text = fail(stand_in_gpu, monkeypatch)
    options = RuntimeOptions(input_size=SIZE, engine_cache_dir=tmp_path)
    candidates = auto_candidates(tiny_onnx, "cuda:0")
    assert candidates[0] == ("tensorrt", "cuda:0", None) and candidates[-1] == ("onnxruntime", "cpu", None)
    with caplog.at_level(logging.INFO, logger="mgcda_core.runtime.factory"):
        runtime = make_runtime("auto", tiny_onnx, "cuda:0", options)
    assert runtime.name == "onnxruntime"
    ((level, message),) = auto_messages(caplog)
    assert level == logging.WARNING and f"tensorrt on cuda:0: {error_type.__name__}: {text}" in message
    with pytest.raises(error_type, match=re.escape(text)):
        make_runtime("tensorrt", tiny_onnx, "cuda:0", options)
    assert not list(tmp_path.glob("*.engine"))  # nothing half-built was cached


def test_auto_with_an_engine_file_has_no_fallback(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    assert auto_candidates(engine, "cuda:0") == [("tensorrt", "cuda:0", None)]
    with pytest.raises(RuntimeError, match=r"runtime auto: no backend can run .*model.engine on cuda:0: tensorrt on "):
        make_runtime("auto", engine, "cuda:0")


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
    with pytest.raises(RuntimeError, match="tensorrt runtime unavailable: device is 'cpu'"):
        make_runtime("tensorrt", tiny_onnx, "cpu")


# --- TensorRT: needs an NVIDIA GPU and the tensorrt package --------------------------------------------------

needs_tensorrt = pytest.mark.skipif(
    not GPU_HERE or importlib.util.find_spec("tensorrt") is None,
    reason="TensorRT tests need a CUDA GPU (seen through cuda-python) and the tensorrt package (CI has neither; the "
           "build decisions run against a stand-in in test_tensorrt_build_decisions.py, the ONNX side on CPU)",
)


@needs_tensorrt
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-4), ("fp16", 2e-2)])
def test_tensorrt_engine_matches_torch_and_is_cached(tiny: Tiny, tiny_onnx: Path, tmp_path: Path,
                                                     precision: str, tolerance: float) -> None:
    from mgcda_core.export.tensorrt_builder import BuildConfig, build_engine_cached
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    shape = (1, 3, *SIZE)
    config = BuildConfig(precision=precision, min_shape=shape, opt_shape=shape, max_shape=shape,
                         timing_cache_dir=tmp_path / "timing")
    first, key = build_engine_cached(tiny_onnx, tmp_path / "cache", config)
    second, _ = build_engine_cached(tiny_onnx, tmp_path / "cache", config)
    assert first.built and not second.built and first.data == second.data
    (timing,) = (tmp_path / "timing").glob("timing-trt*.cache")
    assert timing.stat().st_size > 0 and f"-{precision}.cache" in timing.name
    assert key.recipe.split()[1] == f"{precision}:"
    runtime = TensorRTRuntime(first.path, "cuda:0")
    assert runtime._stream.address != 0  # its own stream, not the legacy default stream 0
    x = image(seed=9)
    out = runtime.run(x)
    assert np.abs(out - expected(tiny, x)).max() <= tolerance
    assert np.array_equal(runtime.run(x), out)  # buffers reused across calls give the same result


@needs_tensorrt
def test_tensorrt_dynamic_engine_runs_every_shape_in_its_profile(tiny: Tiny, tmp_path: Path) -> None:
    from mgcda_core.export.tensorrt_builder import BuildConfig, build_engine_cached
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    path = tmp_path / "dynamic.onnx"
    onnx.save(export_to_proto(tiny, ExportConfig(height=SIZE[0], width=SIZE[1], dynamic=True)), str(path))
    config = BuildConfig(min_shape=(1, 3, 32, 32), opt_shape=(1, 3, *SIZE), max_shape=(2, 3, 128, 256))
    cached, _ = build_engine_cached(path, tmp_path / "cache", config)
    runtime = TensorRTRuntime(cached.data, "cuda:0")
    for shape in ((1, 3, 64, 128), (2, 3, 128, 256), (1, 3, 32, 64)):  # grows, then shrinks the buffers
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        assert np.abs(runtime.run(x) - expected(tiny, x)).max() <= 1e-4, shape
    with pytest.raises(ValueError, match="outside the engine's optimisation profile"):
        runtime.run(np.zeros((1, 3, 256, 512), np.float32))


@needs_tensorrt
@pytest.mark.parametrize(("precision", "relative"), [("fp32", 1e-4), ("fp16", 1e-2)])
def test_tensorrt_runs_the_default_pipeline_within_its_tolerance(tmp_path: Path, precision: str,
                                                                 relative: float) -> None:
    """The shipped default graph at 256x512: fp32 within the export's bar 1e-4 x max(1, max |output|), fp16 within
    1e-2 x that (docs/DEPLOYMENT.md, tolerances)."""
    from mgcda_core.benchmark.runtimes import default_graph
    from mgcda_core.runtime.torch_runtime import TorchRuntime

    graph = default_graph()
    path = tmp_path / "default.onnx"
    onnx.save(export_to_proto(graph, ExportConfig(height=256, width=512)), str(path))
    options = RuntimeOptions(precision=precision, input_size=(256, 512), engine_cache_dir=tmp_path / "cache")
    runtime = make_runtime("tensorrt", path, "cuda:0", options)
    x = np.random.default_rng(11).random((1, 3, 256, 512), dtype=np.float32)
    reference = TorchRuntime(graph, "cpu").run(x)
    assert np.abs(runtime.run(x) - reference).max() <= relative * max(1.0, float(np.abs(reference).max()))


@needs_tensorrt
def test_tensorrt_refuses_an_engine_without_a_valid_sidecar(tmp_path: Path) -> None:
    from mgcda_core.runtime.tensorrt_runtime import TensorRTRuntime

    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"\x00" * 1024)
    with pytest.raises(ValueError, match="no sidecar"):
        TensorRTRuntime(engine, "cuda:0")


@needs_tensorrt
def test_auto_on_a_gpu_picks_tensorrt(tiny_onnx: Path, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mgcda_core.runtime.factory"):
        runtime = make_runtime("auto", tiny_onnx, "cuda:0", RuntimeOptions(input_size=SIZE, engine_cache_dir=tmp_path))
    assert runtime.name == "tensorrt"
    assert auto_messages(caplog) == [(logging.INFO, "runtime auto -> tensorrt on cuda:0 (the fastest backend, "
                                                    "available)")]
