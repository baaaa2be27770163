"""CUDA devices, device memory, copies and streams through cuda-python's runtime bindings, without PyTorch.

Why not PyTorch: on Jetson (JetPack 6, CUDA 12.6) the pinned torch release has no CUDA build, while cuda-python is
published for every CUDA major version. NVIDIA's TensorRT Python samples (``samples/python/common_runtime.py`` in
NVIDIA/TensorRT) drive engines with the same calls: ``cudaMalloc``, ``cudaMemcpyAsync``, ``cudaStreamSynchronize``.

Module: ``cuda.bindings.runtime``, present from cuda-python 12.6; cuda-bindings 13.0 removed the older
``from cuda import cudart`` alias (cuda-bindings 13.0.0 release notes). Every call returns ``(cudaError_t, *values)``;
``call`` turns a non-success code into a ``CudaError`` naming the call and CUDA's own message.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

INSTALL_HINT = ("pip install 'cuda-python>=12.6,<13' for CUDA 12 (JetPack 6) or 'cuda-python>=13,<14' for CUDA 13; "
                "the major version must match the CUDA driver's")


class CudaError(RuntimeError):
    """A CUDA runtime call failed (no GPU, driver too old, out of memory, ...)."""


def import_cudart() -> ModuleType:
    """``cuda.bindings.runtime``, or an ImportError saying how to install it."""
    try:
        from cuda.bindings import runtime
    except ImportError as error:
        raise ImportError(f"cuda-python is not installed ({error}); {INSTALL_HINT}") from error
    return runtime


def call(name: str, *args: Any) -> Any:
    """``cudart.<name>(*args)``: its value (a tuple for several, None for none); CudaError on failure."""
    cudart = import_cudart()
    error, *values = getattr(cudart, name)(*args)
    if error != cudart.cudaError_t.cudaSuccess:
        _, message = cudart.cudaGetErrorString(error)
        raise CudaError(f"{name} failed: {getattr(error, 'name', error)} ({message.decode(errors='replace')})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def native_handle(handle: Any) -> int:
    """The address behind a cuda-python handle (a stream), as TensorRT's ``execute_async_v3`` takes it."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python < 12.9.1 (JetPack 6 pins 12.6), where int() is the documented way
        return int(handle)
    return int(get_cuda_native_handle(handle))


def device_index(device: str) -> int:
    """0 for ``cuda``, i for ``cuda:i``; ValueError for anything else."""
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"expected a CUDA device 'cuda' or 'cuda:<index>', got {device!r}")
    return int(index or 0)


def device_identity(device: str = "cuda:0") -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of ``device``; CudaError without a usable GPU."""
    index = device_index(device)
    count = call("cudaGetDeviceCount")
    if index >= count:
        raise CudaError(f"device {device!r} does not exist: this machine has {count} CUDA device(s)")
    properties = call("cudaGetDeviceProperties", index)
    name = properties.name
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return name.rstrip("\x00").strip(), f"{properties.major}.{properties.minor}"


def use_device(device: str) -> None:
    """Make ``device`` current for this thread (engines and buffers belong to the device current at creation)."""
    call("cudaSetDevice", device_index(device))


class Stream:
    """A CUDA stream of its own: created non-blocking, so work on it never waits for (nor holds up) the legacy
    default stream, which would otherwise synchronise the whole device on every frame."""

    def __init__(self) -> None:
        cudart = import_cudart()
        self.handle = call("cudaStreamCreateWithFlags", cudart.cudaStreamNonBlocking)
        self.address = native_handle(self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def close(self) -> None:
        if self.handle is not None:
            call("cudaStreamDestroy", self.handle)
            self.handle = None


class DeviceBuffer:
    """Device memory that grows to the largest size asked for (dynamic-shape engines change sizes per call)."""

    def __init__(self) -> None:
        self.address = 0
        self.nbytes = 0

    def reserve(self, nbytes: int) -> int:
        """Address of at least ``nbytes`` of device memory (reallocated only when it must grow)."""
        if nbytes > self.nbytes:
            self.free()
            self.address = int(call("cudaMalloc", nbytes))
            self.nbytes = nbytes
        return self.address

    def free(self) -> None:
        if self.address:
            call("cudaFree", self.address)
            self.address, self.nbytes = 0, 0


def copy_to_device(address: int, array: np.ndarray, stream: Stream) -> None:
    """Queue a copy of the C-contiguous ``array`` to ``address`` on ``stream``."""
    cudart = import_cudart()
    call("cudaMemcpyAsync", address, array, array.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle)


def copy_to_host(array: np.ndarray, address: int, stream: Stream) -> None:
    """Queue a copy from ``address`` into the C-contiguous ``array`` on ``stream`` (valid after synchronize)."""
    cudart = import_cudart()
    call("cudaMemcpyAsync", array, address, array.nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle)
