"""Runs an in-memory ``torch.nn.Module`` graph on CPU or CUDA."""

from __future__ import annotations

import numpy as np
import torch


class TorchRuntime:
    """Runtime over a torch module (eval mode, no gradients)."""

    name = "torch"

    def __init__(self, graph: torch.nn.Module, device: str = "cpu") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available in this PyTorch")
        self.device = device
        self.graph = graph.to(device).eval()

    @torch.inference_mode()
    def run(self, image: np.ndarray) -> np.ndarray:
        if image.dtype != np.float32 or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected float32 N x 3 x H x W, got {image.dtype} {image.shape}")
        tensor = torch.from_numpy(image).to(self.device)
        return self.graph(tensor).float().cpu().numpy()
