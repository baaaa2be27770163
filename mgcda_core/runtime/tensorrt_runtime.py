"""Runs a serialized TensorRT engine with device buffers owned by PyTorch CUDA tensors.

``execute_async_v3`` on the current PyTorch CUDA stream: the input is copied into a CUDA tensor, its
``data_ptr()`` and the output tensor's are bound with ``set_tensor_address``, the input shape is set with
``set_input_shape`` (dynamic-shape engines), and the stream is synchronised before the output is copied back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mgcda_core.export.engine_cache import read_sidecar, verify_engine
from mgcda_core.export.tensorrt_builder import cuda_device_identity, import_tensorrt
from mgcda_core.graph_io import INPUT_NAME


def _torch_dtype(trt, dtype) -> torch.dtype:
    mapping = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
               trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        mapping[trt.int64] = torch.int64
    if dtype not in mapping:
        raise TypeError(f"engine tensor type {dtype} has no PyTorch equivalent here")
    return mapping[dtype]


class TensorRTRuntime:
    """Runtime over a serialized TensorRT engine (bytes or an ``.engine`` file with its cache sidecar)."""

    name = "tensorrt"

    def __init__(self, engine: bytes | str | Path, device: str = "cuda:0") -> None:
        if not device.startswith("cuda"):
            raise ValueError(f"the tensorrt runtime runs on CUDA devices only, got device {device!r}")
        gpu_name, capability = cuda_device_identity(device)
        trt = import_tensorrt()
        if isinstance(engine, (str, Path)):
            engine = self._read_verified(Path(engine), trt.__version__, gpu_name, capability)
        self.device = device
        self._torch_device = torch.device(device)
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self._torch_device):
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
        self._input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(INPUT_NAME))
        self._output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))

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
        with torch.cuda.device(self._torch_device):
            tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self._torch_device, self._input_dtype)
            if not self.context.set_input_shape(INPUT_NAME, tuple(tensor.shape)):
                raise ValueError(f"input shape {tuple(tensor.shape)} is outside the engine's optimisation profile")
            output = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)),
                                 dtype=self._output_dtype, device=self._torch_device)
            self.context.set_tensor_address(INPUT_NAME, tensor.data_ptr())
            self.context.set_tensor_address(self.output_name, output.data_ptr())
            stream = torch.cuda.current_stream(self._torch_device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            stream.synchronize()
            return output.float().cpu().numpy()
