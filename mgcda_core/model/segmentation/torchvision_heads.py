"""torchvision DeepLabV3 / LR-ASPP segmentation heads with 19 Cityscapes classes, for user checkpoints.

Nothing is downloaded: the networks are built with ``weights=None, weights_backbone=None`` and a user's
checkpoint (trained on the 19 Cityscapes train ids, ImageNet-normalised RGB input) must be given.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import segmentation as tv_segmentation

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.model.segmentation.base import SegmentationNet, read_state_dict
from mgcda_core.model.weights_file import load_exact

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "deeplabv3_mobilenet_v3_large": tv_segmentation.deeplabv3_mobilenet_v3_large,
    "deeplabv3_resnet50": tv_segmentation.deeplabv3_resnet50,
    "deeplabv3_resnet101": tv_segmentation.deeplabv3_resnet101,
    "lraspp_mobilenet_v3_large": tv_segmentation.lraspp_mobilenet_v3_large,
}


class TorchvisionSegmentation(SegmentationNet):
    """A torchvision segmentation model returning its ``"out"`` logits (19 classes, input size)."""

    def __init__(self, name: str, working_size: tuple[int, int] | None = None) -> None:
        super().__init__(working_size)
        if name not in BUILDERS:
            raise ValueError(f"unknown torchvision segmentation model {name!r}; expected one of {sorted(BUILDERS)}")
        self.name = name
        extra = {"aux_loss": False} if name.startswith("deeplab") else {}  # LR-ASPP has no auxiliary head
        self.net = BUILDERS[name](weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **extra)

    def logits_normalised(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def load_torchvision(name: str, path: str | os.PathLike[str], working_size: tuple[int, int] | None = None) -> TorchvisionSegmentation:
    """Build ``name`` and load the user's state dict from ``path`` exactly (keys of the torchvision model itself,
    optionally under ``net.``), refusing missing/unexpected keys."""
    model = TorchvisionSegmentation(name, working_size)
    state = read_state_dict(path)
    if state and not all(key.startswith("net.") for key in state):
        state = {f"net.{key}": value for key, value in state.items()}
    load_exact(model, state, str(path))
    return model.eval()
