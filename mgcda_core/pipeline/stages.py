"""Segmentation + resynthesis + uncertainty: the shared front half of training-data preparation and inference."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mgcda_core.constants import IMAGENET_MEAN, IMAGENET_STD
from mgcda_core.model.segmentation import SegmentationNet, load_segmentation
from mgcda_core.pipeline.perceptual import efficientnet_lite0_features
from mgcda_core.pipeline.resynthesis import ClassMeanResynthesis, one_hot
from mgcda_core.pipeline.uncertainty import FeaturePyramid, UncertaintyMaps


class StageOutputs(NamedTuple):
    logits: torch.Tensor       # N x 19 x H x W segmentation logits
    semantic: torch.Tensor     # N x H x W int64 train ids (argmax)
    onehot: torch.Tensor       # N x 19 x H x W one-hot of ``semantic``, the logits' dtype
    synthesis: torch.Tensor    # N x 3 x H x W resynthesised RGB in [0, 1]
    uncertainty: torch.Tensor  # N x 3 x H x W in [0, 1]: entropy, softmax distance, perceptual difference
    features: list[torch.Tensor]  # the perceptual extractor's pyramid, 2N per level (images, then resyntheses)


def imagenet_normalise(rgb: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std with torchvision's ImageNet statistics, N x 3 x H x W RGB in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


class InferenceStages(nn.Module):
    """image (N x 3 x H x W RGB in [0, 1]) → ``StageOutputs``, all at the input resolution.

    ``resynthesis`` is called as ``resynthesis(semantic, image, onehot=...)`` and returns RGB in [0, 1];
    ``extractor`` gives the perceptual-difference features (its ``source`` names its weights).
    """

    def __init__(self, segmentation: SegmentationNet, resynthesis: nn.Module, extractor: FeaturePyramid) -> None:
        super().__init__()
        self.segmentation = segmentation
        self.resynthesis = resynthesis
        self.uncertainty = UncertaintyMaps(extractor)

    @property
    def perceptual_source(self) -> str:
        """Which pretrained weights compute the perceptual difference (reported in outputs)."""
        return self.uncertainty.extractor.source

    @classmethod
    def default(cls) -> InferenceStages:
        """Embedded ESPNetv2, training-free class-mean resynthesis, EfficientNet-Lite0 ImageNet features:
        only weights that are shipped or install offline."""
        return cls(load_segmentation("espnetv2"), ClassMeanResynthesis(), efficientnet_lite0_features()).eval()

    def forward(self, image: torch.Tensor) -> StageOutputs:
        logits = self.segmentation(image)
        semantic = logits.argmax(1)
        # one arg-max and one one-hot serve resynthesis, the softmax distance and the dissimilarity network
        onehot = one_hot(semantic, logits.shape[1], logits.dtype)
        synthesis = self.resynthesis(semantic, image, onehot=onehot)
        features = self.uncertainty.features(imagenet_normalise(image), imagenet_normalise(synthesis))
        uncertainty = self.uncertainty.from_features(logits, features, winner=onehot)
        return StageOutputs(logits, semantic, onehot, synthesis, uncertainty, features)
