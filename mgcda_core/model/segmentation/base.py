"""The segmentation plug-in interface and the state-dict reader shared by every plug-in (strict loading:
``mgcda_core.model.weights_file.load_exact``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mgcda_core.constants import IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES
from mgcda_core.errors import ModelError
from mgcda_core.model.weights_file import load_exact, load_weights_only


class SegmentationNet(nn.Module):
    """Base class of segmentation plug-ins.

    ``forward(x)`` takes B x 3 x H x W RGB in [0, 1] and returns B x 19 x H x W Cityscapes train-id logits at the
    input size. Subclasses implement ``logits_normalised`` on ImageNet-normalised input; this class does the
    normalisation and, when ``working_size`` is set, resizes the input to it and the logits back (bilinear).
    """

    num_classes: int = NUM_CLASSES
    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, working_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.working_size = working_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def logits_normalised(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = (x - self.mean) / self.std
        if self.working_size is not None:
            x = nn.functional.interpolate(x, size=self.working_size, mode="bilinear", align_corners=False)
        logits = self.logits_normalised(x)
        if logits.shape[-2:] != size:
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a plain state dict (or a ``{"model"|"state_dict": ...}`` wrapper) with ``weights_only=True``."""
    path = Path(path)
    state = load_weights_only(path, "segmentation weights file")
    if isinstance(state, Mapping):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    # DataParallel checkpoints prefix every key with "module."
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return dict(state)


__all__ = ["SegmentationNet", "load_exact", "read_state_dict"]
