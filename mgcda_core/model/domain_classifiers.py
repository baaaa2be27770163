"""Training-only domain classifiers of MDAT (MGCDA section 3.2): D_f on features, D_o on the anomaly map.

Both are fully convolutional with 3x3 convs, stride 1 and padding 1, so the domain map P has the input's
spatial size (one domain decision per pixel). D_o optionally strides its first four convs by 2 (``stride=2``,
as AdaptSegNet/AdvEnt discriminators do): a map at 1/16 resolution for about 1/100 of the cost; the paper's D_o is
``stride=1``. ReLU between convs, nothing after the last: the raw output
is regressed onto the labels tau / 1 - tau by the least-squares losses in ``mgcda_core.losses.mdat``.
They are never part of the inference graph or the exported network.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["FeatureDomainClassifier", "OutputDomainClassifier"]


def _conv_stack(in_channels: int, widths: Sequence[int], stride: int = 1) -> nn.Sequential:
    """3x3 convs with ReLU between; every conv but the last has ``stride``."""
    layers: list[nn.Module] = []
    channels = in_channels
    for index, width in enumerate(widths):
        last = index == len(widths) - 1
        layers.append(nn.Conv2d(channels, width, kernel_size=3, stride=1 if last else stride, padding=1))
        if not last:
            layers.append(nn.ReLU(inplace=True))
        channels = width
    return nn.Sequential(*layers)


def _check_channels(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


class _DomainClassifier(nn.Module):
    def __init__(self, in_channels: int, widths: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.layers = _conv_stack(in_channels, widths, stride)

    def forward(self, x: Tensor) -> Tensor:
        """x: B x in_channels x H x W -> raw domain map B x 1 x H x W (x ceil(H / 16) x ceil(W / 16) strided)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects B x {self.in_channels} x H x W input, got shape {tuple(x.shape)}"
            )
        return self.layers(x)


class FeatureDomainClassifier(_DomainClassifier):
    """D_f: C(ic/2,3) - C(ic/4,3) - C(ic/8,3) - C(1,3) on the deepest fused encoder features.

    ``in_channels`` (ic) is the fused deepest width (512 with VGG16 at width 1); the divisions are integer
    (floor), so ic must be at least 8 for every layer to keep a channel.
    """

    def __init__(self, in_channels: int) -> None:
        in_channels = _check_channels("in_channels", in_channels, 8)
        super().__init__(in_channels, (in_channels // 2, in_channels // 4, in_channels // 8, 1))


class OutputDomainClassifier(_DomainClassifier):
    """D_o: C(32,3) - C(64,3) - C(128,3) - C(256,3) - C(1,3) on the predicted anomaly map.

    Input: softmax(logits)[:, 1:2] of the dissimilarity network (``in_channels=1``). ``base_channels``
    (default 32, the paper's) scales the widths 1x, 2x, 4x, 8x; smaller values keep tests cheap. ``stride``
    1 (the paper's, one decision per pixel) or 2 (the first four convs strided: one decision per 16x16 cell).
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, stride: int = 1) -> None:
        in_channels = _check_channels("in_channels", in_channels, 1)
        base = _check_channels("base_channels", base_channels, 1)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"stride must be 1 (per-pixel map) or 2 (1/16-resolution map), got {stride!r}")
        super().__init__(in_channels, (base, 2 * base, 4 * base, 8 * base, 1), stride)
