"""The runtime interface every backend (torch, onnxruntime, tensorrt) implements.

A runtime runs the inference graph (see ``mgcda_core.pipeline``): one float32 NCHW input named ``image``
(RGB in [0, 1], network resolution) to one float32 output (by default the raw anomaly score, N x 1 x H x W).
Pre- and post-processing (resizing, normalisation, score calibration) stay outside, in the Detector, so every
backend sees exactly the same tensors.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runtime(Protocol):
    """Executes the inference graph on a batch."""

    #: backend name, e.g. "torch", "onnxruntime", "tensorrt"
    name: str
    #: device description, e.g. "cpu", "cuda:0", "CUDAExecutionProvider"
    device: str

    def run(self, image: np.ndarray) -> np.ndarray:
        """Run the graph on ``image`` (float32, N x 3 x H x W) and return its output as float32 numpy."""
        ...
