"""Spatially-adaptive normalisation (SPADE, Park et al. 2019) as Synboost's decoder uses it (giandbt/synboost; docs/MODEL.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

SPADE_HIDDEN = 128


class SPADE(nn.Module):
    """InstanceNorm (no affine) modulated by the semantic map: ``norm(x) · (1 + γ(s)) + β(s)`` (SPADE eq. 1).

    γ and β are 3x3 convolutions on a shared 3x3 conv + ReLU embedding of the one-hot map, which is
    nearest-resized to the feature map's size.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = SPADE_HIDDEN) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, semantic: Tensor) -> Tensor:
        embedding = self.mlp_shared(F.interpolate(semantic, size=x.shape[-2:], mode="nearest"))
        return self.param_free_norm(x) * (1 + self.mlp_gamma(embedding)) + self.mlp_beta(embedding)


class SPADEBlock(nn.Module):
    """SPADE → SELU → conv 3x3 → SPADE → SELU, channels unchanged (Synboost's ``SPADEDecoderLayer``)."""

    def __init__(self, channels: int, label_channels: int, hidden: int = SPADE_HIDDEN) -> None:
        super().__init__()
        self.norm1 = SPADE(channels, label_channels, hidden)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = SPADE(channels, label_channels, hidden)
        self.act = nn.SELU()

    def forward(self, x: Tensor, semantic: Tensor) -> Tensor:
        x = self.act(self.norm1(x, semantic))
        return self.act(self.norm2(self.conv(x), semantic))
