"""Synboost's dissimilarity network ``DissimNetPrior`` (Di Biase et al., CVPR 2021, and its code giandbt/synboost; docs/MODEL.md).

Per level l = 1..4 (strides ``s·1, s·2, s·4, s·8`` with s = 1 for VGG, 2 for EfficientNet-Lite0):
    F_l = Conv1x1([E(x)_l, E(x_syn)_l, S(onehot)_l])                         fusion
    F_l ← F_l ⊙ P(prior)_l                                                     when ``use_prior``
    F_l ← [Σ_c E(x)_l,c · E(x_syn)_l,c, F_l]                                  when ``use_correlation``
with E the shared (siamese) image encoder, S the semantic encoder and P the prior encoder. The decoder is
conv3x3 + SELU on F_4, then three times [SPADE block → ConvTranspose 2x2/2 → concat F_(l−1) → conv3x3 + SELU],
a last SPADE block and a 1x1 head to 2 logits. With s > 1 the logits and the last decoder features are bilinearly
upsampled to the input size, so both are always at input resolution.

Real-time options (the architecture of ``config/presets/realtime.yaml``): ``decoder_width`` scales every layer
outside the image encoder on its own; ``first_level`` drops the finest pyramid levels (1: the decoder starts at
the encoder's stride-4 level, whose work is a quarter of the stride-2 level's); ``freeze_encoder`` keeps the
ImageNet encoder fixed (weights and BatchNorm statistics), so its features are exactly those of the perceptual
difference and the inference graph computes them once for both (``decode``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.model.efficientnet_lite import scale_channels
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.model.encoders import build_encoder
from mgcda_core.model.spade import SPADEBlock

SEMANTIC_BASE = 32  # semantic encoder's first width; fused levels use twice it (64 … 512)
MAX_FIRST_LEVEL = 2  # at least two pyramid levels stay, so the decoder has one up-stage


class DissimOutput(NamedTuple):
    logits: Tensor  # B x 2 x H x W, at input resolution
    fused_deepest: Tensor  # B x C x H/(8s) x W/(8s): deepest fused (prior-multiplied) features, input of D_f
    decoder_features: Tensor  # B x C_dec x H x W: last decoder features before the 1x1 head, input of the projector


class ConditionEncoder(nn.Module):
    """Synboost's ``SemanticEncoder``: conv 7x7 (base), three conv 3x3 stride 2 doubling channels, ReLU after each."""

    def __init__(self, in_channels: int, base: int, levels: int = 4) -> None:
        super().__init__()
        self.out_channels = tuple(base * 2**i for i in range(levels))
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

    def __init__(self, encoder: str = "vgg16", width: float = 1.0, weights: EncoderWeights | None = None,
                 num_classes: int = NUM_CLASSES, use_prior: bool = True, use_correlation: bool = True,
                 decoder_width: float | None = None, first_level: int = 0, freeze_encoder: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if first_level not in range(MAX_FIRST_LEVEL + 1):
            raise ValueError(f"first_level must be in 0..{MAX_FIRST_LEVEL}, got {first_level}")
        decoder_width = float(width if decoder_width is None else decoder_width)
        if not decoder_width > 0:
            raise ValueError(f"decoder_width must be > 0, got {decoder_width}")
        # Constructor arguments that define the parameter layout (weights only decide the initial values).
        self.architecture: dict[str, Any] = {"encoder": encoder, "width": float(width), "num_classes": num_classes,
                                             "use_prior": use_prior, "use_correlation": use_correlation,
                                             "decoder_width": decoder_width, "first_level": first_level,
                                             "freeze_encoder": freeze_encoder}
        self.num_classes = num_classes
        self.use_prior = use_prior
        self.use_correlation = use_correlation
        self.first_level = first_level
        self.freeze_encoder = freeze_encoder
        self.encoder = build_encoder(encoder, width=width, weights=weights)
        if freeze_encoder:  # weights and BatchNorm statistics stay ImageNet's (a new module is in training mode)
            self.encoder.requires_grad_(False).eval()
        levels = len(self.encoder.out_channels) - first_level
        self.base_stride = self.encoder.strides[first_level]
        self.input_multiple = self.encoder.strides[-1]
        base = scale_channels(SEMANTIC_BASE, decoder_width)
        self.semantic_encoder = ConditionEncoder(num_classes, base, levels)
        self.fused_channels: tuple[int, ...] = tuple(2 * c for c in self.semantic_encoder.out_channels)
        self.fuse = nn.ModuleList(
            nn.Conv2d(2 * e + s, f, 1) for e, s, f in
            zip(self.encoder.out_channels[first_level:], self.semantic_encoder.out_channels, self.fused_channels))
        self.prior_encoder = ConditionEncoder(3, 2 * base, levels) if use_prior else None
        extra = 1 if use_correlation else 0
        # 256, 256, 128, 64 at width 1 with four levels; the coarsest stages are kept when levels are dropped
        dec = (8 * base, 8 * base, 4 * base, 2 * base)[: levels]
        hidden = 4 * base  # SPADE's 128 at width 1
        self.bottleneck = nn.Sequential(nn.Conv2d(self.fused_channels[-1] + extra, dec[0], 3, padding=1), nn.SELU())
        self.up_stages = nn.ModuleList(
            UpStage(dec[i], self.fused_channels[-2 - i] + extra, dec[i + 1], num_classes, hidden)
            for i in range(levels - 1))
        self.final_block = SPADEBlock(dec[-1], num_classes, hidden)
        self.head = nn.Conv2d(dec[-1], 2, 1)
        self.decoder_channels: int = dec[-1]

    def train(self, mode: bool = True) -> DissimNetPrior:
        super().train(mode)
        if self.freeze_encoder:  # frozen ImageNet statistics: BatchNorm stays in inference mode
            self.encoder.eval()
        return self

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

    def encode(self, image: Tensor, synthesis: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The siamese encoder's pyramids of image and synthesis (one batched pass when the encoder is frozen)."""
        if not self.freeze_encoder:  # a training BatchNorm must not see both images in one batch
            return self.encoder(image), self.encoder(synthesis)
        with torch.no_grad():
            both = self.encoder(torch.cat((image, synthesis), 0))
        n = image.shape[0]
        return [f[:n] for f in both], [f[n:] for f in both]

    def forward(self, image: Tensor, synthesis: Tensor, semantic: Tensor, prior: Tensor) -> DissimOutput:
        """image, synthesis: ImageNet-normalised RGB; semantic: one-hot float; prior: 3 maps in [0, 1]."""
        self._check_inputs(image, synthesis, semantic, prior)
        f_img, f_syn = self.encode(image, synthesis)
        return self.decode(f_img, f_syn, semantic, prior)

    def decode(self, f_img: list[Tensor], f_syn: list[Tensor], semantic: Tensor, prior: Tensor) -> DissimOutput:
        """Fusion and decoder on given encoder pyramids (``encode``'s, or the same features computed elsewhere:
        a frozen encoder shares them with the perceptual difference)."""
        size = semantic.shape[-2:]
        low = (size[0] // self.base_stride, size[1] // self.base_stride)
        f_img, f_syn = f_img[self.first_level:], f_syn[self.first_level:]
        # The condition encoders start at the image encoder's first stride so all levels line up.
        semantic_low = semantic if self.base_stride == 1 else F.interpolate(semantic, size=low, mode="nearest")
        f_sem = self.semantic_encoder(semantic_low)
        fused = [conv(torch.cat(level, dim=1)) for conv, level in zip(self.fuse, zip(f_img, f_syn, f_sem))]
        if self.prior_encoder is not None:
            prior_low = prior if self.base_stride == 1 else F.avg_pool2d(prior, self.base_stride)
            fused = [f * p for f, p in zip(fused, self.prior_encoder(prior_low))]
        fused_deepest = fused[-1]
        if self.use_correlation:
            fused = [torch.cat((correlation(a, b), f), dim=1) for a, b, f in zip(f_img, f_syn, fused)]
        x = self.bottleneck(fused[-1])
        for stage, skip in zip(self.up_stages, fused[-2::-1]):
            x = stage(x, skip, semantic)
        x = self.final_block(x, semantic)
        if self.base_stride == 1:
            return DissimOutput(self.head(x), fused_deepest, x)
        # The 1x1 head and bilinear upsampling are both linear, so they commute: the head runs at the low
        # resolution (cheap); the upsampled features only feed the training-time projector (pruned on export).
        logits = F.interpolate(self.head(x), size=size, mode="bilinear", align_corners=False)
        return DissimOutput(logits, fused_deepest, F.interpolate(x, size=size, mode="bilinear", align_corners=False))
