"""Training-only projection head of CACL (MGCDA section 3.3): decoder features -> unit-length pixel embeddings."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ContrastProjector"]


class ContrastProjector(nn.Module):
    """1x1 conv in -> hidden (64) -> ReLU -> 1x1 conv -> out (128), L2-normalised over channels per pixel.

    Input: the last decoder features (B x C_dec x H x W, C_dec = 64 at width 1; pass the model's
    ``decoder_channels`` when the width is scaled). Output: B x out_channels x H x W with unit-norm pixels,
    so dot products are cosine similarities (the a·p of eq. 3).
    """

    def __init__(self, in_channels: int = 64, out_channels: int = 128, hidden_channels: int = 64) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("hidden_channels", hidden_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channels = in_channels
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=1),
        )

    def forward(self, features: Tensor) -> Tensor:
        if features.ndim != 4 or features.shape[1] != self.in_channels:
            raise ValueError(
                f"ContrastProjector expects B x {self.in_channels} x H x W features, got shape {tuple(features.shape)}"
            )
        # eps keeps an all-zero pixel (possible after ReLU) at zero instead of NaN.
        return F.normalize(self.head(features), p=2.0, dim=1, eps=1e-12)
