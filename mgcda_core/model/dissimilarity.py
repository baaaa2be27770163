"""Synboost's dissimilarity network ``DissimNetPrior`` (SPEC §2.4 and Appendix A).

Per level l = 1..4 (strides ``s·1, s·2, s·4, s·8`` with s = 1 for VGG, 2 for EfficientNet-Lite0):
    F_l = Conv1x1([E(x)_l, E(x_syn)_l, S(onehot)_l])                         fusion
    F_l ← F_l ⊙ P(prior)_l                                                     when ``use_prior``
    F_l ← [Σ_c E(x)_l,c · E(x_syn)_l,c, F_l]                                  when ``use_correlation``
with E the shared (siamese) image encoder, S the semantic encoder and P the prior encoder. The decoder is
conv3x3 + SELU on F_4, then three times [SPADE block → ConvTranspose 2x2/2 → concat F_(l−1) → conv3x3 + SELU],
a last SPADE block and a 1x1 head to 2 logits. With s = 2 the last decoder features are bilinearly upsampled
to the input size before the head, so logits and ``decoder_features`` are always at input resolution.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.model.efficientnet_lite import scale_channels
from mgcda_core.model.encoders import build_encoder
from mgcda_core.model.spade import SPADEBlock

SEMANTIC_BASE = 32  # semantic encoder's first width; fused levels use twice it (64 … 512)


class DissimOutput(NamedTuple):
    logits: Tensor  # B x 2 x H x W, at input resolution
    fused_deepest: Tensor  # B x C x H/(8s) x W/(8s): deepest fused (prior-multiplied) features, input of D_f
    decoder_features: Tensor  # B x C_dec x H x W: last decoder features before the 1x1 head, input of the projector


class ConditionEncoder(nn.Module):
    """Synboost's ``SemanticEncoder``: conv 7x7 (base), three conv 3x3 stride 2 doubling channels, ReLU after each."""

    def __init__(self, in_channels: int, base: int) -> None:
        super().__init__()
        self.out_channels = tuple(base * 2**i for i in range(4))
        convs = [nn.Conv2d(in_channels, base, 7, padding=3)]
        convs += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1) for c in self.out_channels[:-1]]
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for conv in self.convs:
            x = F.relu(conv(x))
            features.append(x)
        return features


class UpStage(nn.Module):
    """SPADE block → ConvTranspose 2x2 stride 2 → concat the skip level → conv 3x3 + SELU."""

    def __init__(self, channels: int, skip_channels: int, out_channels: int, label_channels: int,
                 hidden: int) -> None:
        super().__init__()
        self.block = SPADEBlock(channels, label_channels, hidden)
        self.up = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.conv = nn.Sequential(nn.Conv2d(channels + skip_channels, out_channels, 3, padding=1), nn.SELU())

    def forward(self, x: Tensor, skip: Tensor, semantic: Tensor) -> Tensor:
        return self.conv(torch.cat((self.up(self.block(x, semantic)), skip), dim=1))


def correlation(a: Tensor, b: Tensor) -> Tensor:
    """One-channel correlation Σ_c a_c · b_c (Synboost's per-level correlation), B x 1 x H x W."""
    return (a * b).sum(dim=1, keepdim=True)


class DissimNetPrior(nn.Module):
    """Dissimilarity network; see the module docstring. ``width`` scales every channel count (tiny tests)."""

    def __init__(self, encoder: str = "vgg16", width: float = 1.0, pretrained: bool = False,
                 num_classes: int = NUM_CLASSES, use_prior: bool = True, use_correlation: bool = True) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        # Constructor arguments that define the parameter layout (pretrained only decides the initial values).
        self.architecture: dict[str, Any] = {"encoder": encoder, "width": float(width), "num_classes": num_classes,
                                             "use_prior": use_prior, "use_correlation": use_correlation}
        self.num_classes = num_classes
        self.use_prior = use_prior
        self.use_correlation = use_correlation
        self.encoder = build_encoder(encoder, width=width, pretrained=pretrained)
        self.base_stride = self.encoder.strides[0]
        self.input_multiple = self.encoder.strides[-1]
        base = scale_channels(SEMANTIC_BASE, width)
        self.semantic_encoder = ConditionEncoder(num_classes, base)
        self.fused_channels: tuple[int, int, int, int] = tuple(2 * c for c in self.semantic_encoder.out_channels)
        self.fuse = nn.ModuleList(
            nn.Conv2d(2 * e + s, f, 1)
            for e, s, f in zip(self.encoder.out_channels, self.semantic_encoder.out_channels, self.fused_channels))
        self.prior_encoder = ConditionEncoder(3, 2 * base) if use_prior else None
        extra = 1 if use_correlation else 0
        dec = (8 * base, 8 * base, 4 * base, 2 * base)  # 256, 256, 128, 64 at width 1
        hidden = 4 * base  # SPADE's 128 at width 1
        self.bottleneck = nn.Sequential(nn.Conv2d(self.fused_channels[3] + extra, dec[0], 3, padding=1), nn.SELU())
        self.up_stages = nn.ModuleList(
            UpStage(dec[i], self.fused_channels[2 - i] + extra, dec[i + 1], num_classes, hidden) for i in range(3))
        self.final_block = SPADEBlock(dec[3], num_classes, hidden)
        self.head = nn.Conv2d(dec[3], 2, 1)
        self.decoder_channels: int = dec[3]

    def _check_inputs(self, image: Tensor, synthesis: Tensor, semantic: Tensor, prior: Tensor) -> None:
        expected = {"image": 3, "synthesis": 3, "semantic": self.num_classes, "prior": 3}
        inputs = {"image": image, "synthesis": synthesis, "semantic": semantic, "prior": prior}
        for name, tensor in inputs.items():
            if not isinstance(tensor, Tensor) or tensor.ndim != 4 or tensor.shape[1] != expected[name]:
                shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
                raise ValueError(f"{name} must be a B x {expected[name]} x H x W tensor, got {shape}")
            if not tensor.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
        b, _, h, w = image.shape
        for name, tensor in inputs.items():
            if (tensor.shape[0], *tensor.shape[2:]) != (b, h, w):
                raise ValueError(f"{name} has batch x size {tensor.shape[0]} x {tensor.shape[2]}x{tensor.shape[3]}, "
                                 f"expected {b} x {h}x{w} like image")
        if h % self.input_multiple or w % self.input_multiple:
            raise ValueError(f"H and W must be divisible by {self.input_multiple} for encoder "
                             f"{self.architecture['encoder']!r}, got {h}x{w}")

    def forward(self, image: Tensor, synthesis: Tensor, semantic: Tensor, prior: Tensor) -> DissimOutput:
        """image, synthesis: ImageNet-normalised RGB; semantic: one-hot float; prior: 3 maps in [0, 1]."""
        self._check_inputs(image, synthesis, semantic, prior)
        size = image.shape[-2:]
        low = (size[0] // self.base_stride, size[1] // self.base_stride)
        f_img, f_syn = self.encoder(image), self.encoder(synthesis)
        # The condition encoders start at the image encoder's first stride so all levels line up.
        semantic_low = semantic if self.base_stride == 1 else F.interpolate(semantic, size=low, mode="nearest")
        f_sem = self.semantic_encoder(semantic_low)
        fused = [conv(torch.cat(level, dim=1)) for conv, level in zip(self.fuse, zip(f_img, f_syn, f_sem))]
        if self.prior_encoder is not None:
            prior_low = prior if self.base_stride == 1 else F.avg_pool2d(prior, self.base_stride)
            fused = [f * p for f, p in zip(fused, self.prior_encoder(prior_low))]
        fused_deepest = fused[3]
        if self.use_correlation:
            fused = [torch.cat((correlation(a, b), f), dim=1) for a, b, f in zip(f_img, f_syn, fused)]
        x = self.bottleneck(fused[3])
        for stage, skip in zip(self.up_stages, fused[2::-1]):
            x = stage(x, skip, semantic)
        x = self.final_block(x, semantic)
        if self.base_stride != 1:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return DissimOutput(self.head(x), fused_deepest, x)
