"""Runs a serialized TensorRT engine with device buffers, copies and a stream from cuda-python (no PyTorch CUDA).

Per call: ``set_input_shape`` (dynamic-shape engines), the output shape from ``get_tensor_shape``, device buffers
grown to fit, both bound with ``set_tensor_address``, the input copied in, ``execute_async_v3`` and the output
copied back, all queued on the runtime's own non-blocking stream, then one ``cudaStreamSynchronize``
(TensorRT Python API: IExecutionContext; NVIDIA/TensorRT ``samples/python/common_runtime.py`` for the CUDA side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mgcda_core.export.engine_cache import read_sidecar, verify_engine
from mgcda_core.export.tensorrt_builder import import_tensorrt
from mgcda_core.graph_io import INPUT_NAME
from mgcda_core.utils import cuda_memory


class TensorRTRuntime:
    """Runtime over a serialized TensorRT engine (bytes or an ``.engine`` file with its cache sidecar)."""

    name = "tensorrt"

    def __init__(self, engine: bytes | str | Path, device: str = "cuda:0") -> None:
        gpu_name, capability = cuda_memory.device_identity(device)
        trt = import_tensorrt()
        if isinstance(engine, (str, Path)):
            engine = self._read_verified(Path(engine), trt.__version__, gpu_name, capability)
        self.device = device
        cuda_memory.use_device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (corrupt, or built by another "
                               "TensorRT version or for another GPU)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or len(outputs) != 1:
            raise ValueError(f"engine has inputs {inputs} and outputs {outputs}; expected one input {INPUT_NAME!r} "
                             "and one output")
        self.output_name = outputs[0]
        self._input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME)))
        self._output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._stream = cuda_memory.Stream()
        self._input, self._output = cuda_memory.DeviceBuffer(), cuda_memory.DeviceBuffer()

    @staticmethod
    def _read_verified(path: Path, trt_version: str, gpu_name: str, capability: str) -> bytes:
        """Engine bytes, refused unless its sidecar matches the bytes and this TensorRT version and GPU."""
        data, reason = verify_engine(path)
        if data is None:
            raise ValueError(f"refusing engine {path}: {reason}; rebuild it on this machine with "
                             "python -m mgcda_core.export --engine ... --build-only")
        key = read_sidecar(path)["key"]
        here = {"tensorrt_version": trt_version, "gpu_name": gpu_name, "compute_capability": capability}
        differences = [f"{name}: engine {key[name]!r}, here {value!r}" for name, value in here.items()
                       if key[name] != value]
        if differences:
            raise ValueError(f"refusing engine {path}, built elsewhere: " + "; ".join(differences))
        return data

    def run(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.float32 or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected float32 N x 3 x H x W, got {image.dtype} {image.shape}")
        cuda_memory.use_device(self.device)  # the calling thread may have another device current
        host_input = np.ascontiguousarray(image, dtype=self._input_dtype)
        if not self.context.set_input_shape(INPUT_NAME, host_input.shape):
            raise ValueError(f"input shape {host_input.shape} is outside the engine's optimisation profile")
        host_output = np.empty(tuple(self.context.get_tensor_shape(self.output_name)), self._output_dtype)
        self.context.set_tensor_address(INPUT_NAME, self._input.reserve(host_input.nbytes))
        self.context.set_tensor_address(self.output_name, self._output.reserve(host_output.nbytes))
        cuda_memory.copy_to_device(self._input.address, host_input, self._stream)
        if not self.context.execute_async_v3(self._stream.address):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        cuda_memory.copy_to_host(host_output, self._output.address, self._stream)
        self._stream.synchronize()
        return host_output.astype(np.float32, copy=False)

    def close(self) -> None:
        """Free the device buffers and the stream (also done when the runtime is garbage collected)."""
        for resource in ("_input", "_output"):
            if hasattr(self, resource):
                getattr(self, resource).free()
        if hasattr(self, "_stream"):
            self._stream.close()

    def __del__(self) -> None:
        try:
            self.close()
        except (cuda_memory.CudaError, ImportError):  # interpreter shutdown or a lost device: nothing to free
            pass
