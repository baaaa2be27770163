"""Segmentation plug-ins: B x 3 x H x W RGB in [0, 1] → B x 19 x H x W Cityscapes train-id logits.

``load_segmentation("espnetv2")`` returns the embedded default (ESPNetv2 s=2.0, Cityscapes, shipped in
``mgcda_core/assets/``); ``weights=`` names a user file instead. Other names are torchvision heads that need a
user checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from mgcda_core.model.segmentation.base import SegmentationNet, read_state_dict
from mgcda_core.model.segmentation.espnetv2 import ESPNetv2, load_espnetv2
from mgcda_core.model.segmentation.torchvision_heads import BUILDERS as TORCHVISION_MODELS
from mgcda_core.model.segmentation.torchvision_heads import TorchvisionSegmentation, load_torchvision
from mgcda_core.model.weights_file import load_exact

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_WEIGHTS = ASSETS / "espnetv2_s_2.0_city_1024x512.pth"
NAMES = ("espnetv2", *TORCHVISION_MODELS)


def load_segmentation(name: str = "espnetv2", weights: str | os.PathLike[str] | None = None,
                      working_size: tuple[int, int] | None = None) -> SegmentationNet:
    """The segmentation plug-in ``name`` in eval mode with ``weights`` (``None``: the embedded default).

    ``working_size`` (height, width), if given, makes the plug-in resize its input to that size and its logits
    back; by default it runs at the size it is given. Unknown names, missing files and mismatched weights are
    refused with a message naming them.
    """
    if name == "espnetv2":
        return load_espnetv2(DEFAULT_WEIGHTS if weights is None else weights, working_size=working_size)
    if name in TORCHVISION_MODELS:
        if weights is None:
            raise ValueError(f"segmentation model {name!r} has no embedded weights: pass weights=<checkpoint with "
                             f"19 Cityscapes classes> (nothing is downloaded)")
        return load_torchvision(name, weights, working_size)
    raise ValueError(f"unknown segmentation model {name!r}; expected one of {list(NAMES)}")


__all__ = ["DEFAULT_WEIGHTS", "ESPNetv2", "NAMES", "SegmentationNet", "TorchvisionSegmentation", "load_exact",
           "load_segmentation", "read_state_dict"]
