"""Runs an exported inference graph (ONNX) with ONNX Runtime on CPU or CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from mgcda_core.export.cpu_rewrites import for_cpu
from mgcda_core.graph_io import INPUT_NAME, check_io


def _cuda_index(device: str) -> int:
    _, _, index = device.partition(":")
    return int(index) if index else 0


class OnnxRuntime:
    """Runtime over an ONNX model: ``CPUExecutionProvider``, or ``CUDAExecutionProvider`` for ``cuda[:i]``.

    Session options: graph optimisation level ALL (constant folding, Conv+BatchNorm and activation fusion),
    sequential execution, ``threads`` intra-op threads (None: ONNX Runtime's default, one per physical core).
    On CPU the session runs the model with ``export.cpu_rewrites.for_cpu`` applied (PReLU as depthwise scalings).

    ``stop_spinning_after_run`` (default True): ONNX Runtime's worker threads stop at the end of each run
    (``session.force_spinning_stop``) instead of spinning for the next one, which in ONNX Runtime's default keeps
    a core busy for 30 ms and more after ``run`` returns (measured here with 2 threads). Every caller does work
    between runs (resizing, calibration, a ROS node's publishing, the camera driver and planner beside it), and that
    work then got one core instead of two. Measured here (docs/RESULTS.md, docs/ROS.md): the shipped pipeline end to
    end 103-109 ms a frame with it against 107-116 without, the graph alone back to back 102-105 against 100-108,
    the node's work after the model 10-11 ms against 18.
    """

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes | onnx.ModelProto, device: str = "cpu",
                 threads: int | None = None, stop_spinning_after_run: bool = True) -> None:
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"ONNX model {path} does not exist")
            proto = onnx.load(str(path))
        elif isinstance(model, bytes):
            proto = onnx.load_from_string(model)
        else:
            proto = model
        self.input_spec, self.output_spec = check_io(proto)
        if device == "cpu":
            providers: list = ["CPUExecutionProvider"]
            proto = for_cpu(proto)
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError(f"device {device!r} requested but this onnxruntime has no CUDAExecutionProvider "
                                   f"(available: {ort.get_available_providers()}); install onnxruntime-gpu")
            providers = [("CUDAExecutionProvider", {"device_id": _cuda_index(device)}), "CPUExecutionProvider"]
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda[:index]', got {device!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if threads is not None:
            if threads <= 0:
                raise ValueError(f"threads must be positive, got {threads}")
            options.intra_op_num_threads = threads
        if stop_spinning_after_run:
            options.add_session_config_entry("session.force_spinning_stop", "1")
        self.device = device
        self.session = ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=providers)
        self.provider = self.session.get_providers()[0]

    def run(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.float32 or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected float32 N x 3 x H x W, got {image.dtype} {image.shape}")
        for axis, size in enumerate(self.input_spec.shape):
            if isinstance(size, int) and image.shape[axis] != size:
                raise ValueError(f"this ONNX model has a fixed input shape {list(self.input_spec.shape)}; "
                                 f"got {list(image.shape)} (export with --dynamic for other sizes)")
        (output,) = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(image)})
        return output
