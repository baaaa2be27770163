"""ESPNetv2 semantic segmentation (Mehta et al., CVPR 2019), laid out so EdgeNets' Cityscapes weights load exactly.

Written from the paper and the published weight layout (sacmehta/EdgeNets @ 2b232d3f, 526 tensors for every
width s). Differences from the reference forward pass, none of which changes the numbers on its training sizes:
- the input-reinforcement pyramid is pooled a fixed number of times per level (the reference loops until the
  heights match, which is the same count for any size, but is data-dependent Python control flow);
- adaptive average pooling to sizes that do not divide the input is written with average pooling and a
  constant row selection, or small averaging matrices (identical values to ``F.adaptive_avg_pool2d``;
  exportable to ONNX/TensorRT, which lack that op). With ``symbolic_shapes`` set (for a dynamic-size export) the
  pyramid sizes and all pooling matrices are computed from the traced tensor shapes instead, so the exported
  graph is valid at every input size;
- decoder upsampling goes to the skip connection's size instead of ``scale_factor=2``.

The Cityscapes files have 20 output channels: the 19 train ids followed by "background" (EdgeNets' ignore class).
``forward`` returns the first 19, so argmax is over the 19 train classes only (a pixel the network calls
background gets its most likely train class; the anomaly scores see the train-class distribution).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.errors import ModelError
from mgcda_core.model.segmentation.base import SegmentationNet, read_state_dict
from mgcda_core.model.weights_file import load_exact

# Channels at levels 1-4 per width s (EdgeNets' ESPNetv2 configuration, levels 5+ unused by segmentation).
LEVEL_CHANNELS = {0.5: (16, 32, 64, 128), 1.0: (32, 64, 128, 256), 1.5: (32, 96, 192, 384), 2.0: (32, 128, 256, 512)}
BRANCHES = 4
LEVEL3_REPEATS, LEVEL4_REPEATS = 3, 7
# Receptive-field limits of the EESP blocks: level2_0, level3_0, level3, level4_0, level4.
RECEPTIVE_LIMITS = {"level2_0": 13, "level3_0": 11, "level3": 9, "level4_0": 9, "level4": 7}
PYRAMID_SCALES = tuple(Fraction(v) for v in ("2", "3/2", "1", "1/2", "1/10"))
PYRAMID_MIN = 5  # smallest side of a pyramid level
CITYSCAPES_OUTPUTS = NUM_CLASSES + 1  # 19 train ids + background

Size = int | torch.Tensor  # a tensor side: a Python int, or a 0-d tensor while tracing with symbolic shapes

FILE_NAME = re.compile(r"espnetv2_s_(?P<s>[0-9.]+)_city_(?P<w>\d+)x(?P<h>\d+)\.pth$")


class _ConvBNAct(nn.Module):
    """conv (+ BatchNorm) (+ PReLU), attribute names as in the weight files (``conv``, ``bn``, ``act``)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1,
                 bn: bool = True, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2 * dilation, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.act = nn.PReLU(cout) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x) if self.act is not None else x


class _BNAct(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class _CBRSeq(nn.Module):
    """Decoder-side conv-BN-PReLU stored as ``cbr.{0,1,2}``."""

    def __init__(self, cin: int, cout: int, k: int, groups: int = 1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(nn.Conv2d(cin, cout, k, 1, (k - 1) // 2, groups=groups, bias=False),
                                 nn.BatchNorm2d(cout), nn.PReLU(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbr(x)


class _BRSeq(nn.Module):
    """Decoder-side BN-PReLU stored as ``br.{0,1}``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.br = nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.br(x)


class _Shuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _pool_axis(x: torch.Tensor, axis: int, size_out: int) -> torch.Tensor:
    """Adaptive average pooling of N x C x H x W along ``axis`` (-2 or -1) to ``size_out``, with PyTorch's bins
    [floor(i·n/m), ceil((i+1)·n/m)). Equal-width bins (the common case) are an average pool, strided or
    followed by a constant row selection; unequal bins fall back to an averaging matrix. Sizes are static, so
    all of this exports to plain ONNX ops (AveragePool, Gather, MatMul)."""
    size_in = int(x.shape[axis])
    if size_in == size_out:
        return x
    starts = [i * size_in // size_out for i in range(size_out)]
    ends = [-(-(i + 1) * size_in // size_out) for i in range(size_out)]
    widths = {end - start for start, end in zip(starts, ends)}
    if len(widths) == 1:
        width = widths.pop()
        kernel = (width, 1) if axis == -2 else (1, width)
        if size_in % size_out == 0:
            return F.avg_pool2d(x, kernel, kernel)
        pooled = F.avg_pool2d(x, kernel, 1)
        return pooled.index_select(axis, torch.tensor(starts, device=x.device))
    start = torch.tensor(starts, device=x.device, dtype=x.dtype).unsqueeze(1)
    end = torch.tensor(ends, device=x.device, dtype=x.dtype).unsqueeze(1)
    j = torch.arange(size_in, device=x.device, dtype=x.dtype).unsqueeze(0)
    matrix = ((j >= start) & (j < end)).to(x.dtype) / (end - start)  # size_out x size_in
    return torch.matmul(matrix, x) if axis == -2 else torch.matmul(x, matrix.transpose(0, 1))


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` for any pair of sizes, exportable to ONNX/TensorRT (which lack it)."""
    return _pool_axis(_pool_axis(x, -2, size[0]), -1, size[1])


def _pooling_matrix(size_in: Size, size_out: Size, like: torch.Tensor) -> torch.Tensor:
    """size_out x size_in averaging matrix of PyTorch's adaptive bins [floor(o·in/out), ceil((o+1)·in/out)),
    built with arange and comparisons only, so that a traced size stays symbolic (ONNX Range, Div, Less...)."""
    o = torch.arange(size_out, device=like.device).unsqueeze(1)  # type: ignore[arg-type]  # stub omits 0-d tensor ends, which arange takes (and traces)
    start = o * size_in // size_out
    end = ((o + 1) * size_in + size_out - 1) // size_out  # ceil for positive integers
    j = torch.arange(size_in, device=like.device).unsqueeze(0)  # type: ignore[arg-type]  # stub omits 0-d tensor ends, which arange takes (and traces)
    return ((j >= start) & (j < end)).to(like.dtype) / (end - start).to(like.dtype)


def adaptive_avg_pool_symbolic(x: torch.Tensor, size: tuple[Size, Size]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` as two matrix products whose matrices follow the input shape at run time.

    Unlike ``adaptive_avg_pool`` (which bakes the bins of the traced size into the graph), a traced/exported
    graph of this stays correct at every input size; ``size`` may itself be traced shape arithmetic. Costs a
    dense matmul per axis, hence only used for dynamic-size export.
    """
    rows = _pooling_matrix(x.shape[-2], size[0], x)
    cols = _pooling_matrix(x.shape[-1], size[1], x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def pyramid_size(size: Size, scale: Fraction) -> Size:
    """max(ceil(size·scale), 5): a pyramid level's side, in integer arithmetic so that it also traces
    symbolically (equal to EdgeNets' ``math.ceil(size * float(scale))`` for these scales; tested)."""
    scaled = (size * scale.numerator + scale.denominator - 1) // scale.denominator
    return torch.clamp(scaled, min=PYRAMID_MIN) if isinstance(scaled, torch.Tensor) else max(scaled, PYRAMID_MIN)


class EESP(nn.Module):
    """Reduce (grouped 1x1) → split into k dilated depthwise 3x3 → hierarchical sum → merge (grouped 1x1)."""

    def __init__(self, cin: int, cout: int, stride: int, r_lim: int, k: int = BRANCHES, downsampling: bool = False) -> None:
        super().__init__()
        n = cout // k
        if n * k != cout:
            raise ValueError(f"EESP output channels {cout} must be divisible by the {k} branches")
        self.downsampling = downsampling
        self.proj_1x1 = _ConvBNAct(cin, n, 1, groups=k)
        # kernel sizes 3, 5, 7, ... capped at the receptive limit (back to 3), sorted; dilation = (size - 1) / 2
        sizes = sorted(3 + 2 * i if 3 + 2 * i <= r_lim else 3 for i in range(k))
        self.spp_dw = nn.ModuleList(_ConvBNAct(n, n, 3, stride, groups=n, dilation=(s - 1) // 2, bn=False, act=False)
                                    for s in sizes)
        self.conv_1x1_exp = _ConvBNAct(cout, cout, 1, groups=k, act=False)
        self.br_after_cat = _BNAct(cout)
        self.module_act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        branches = [self.spp_dw[0](reduced)]
        for conv in self.spp_dw[1:]:
            branches.append(conv(reduced) + branches[-1])  # hierarchical feature fusion
        merged = self.conv_1x1_exp(self.br_after_cat(torch.cat(branches, 1)))
        if self.downsampling:
            return merged
        if merged.shape == x.shape:
            merged = merged + x
        return self.module_act(merged)


class DownSampler(nn.Module):
    """concat(avg-pool, strided EESP) + a projection of the image pooled to the same size (input reinforcement)."""

    def __init__(self, cin: int, cout: int, r_lim: int) -> None:
        super().__init__()
        self.eesp = EESP(cin, cout - cin, stride=2, r_lim=r_lim, downsampling=True)
        self.inp_reinf = nn.Sequential(_ConvBNAct(3, 3, 3), _ConvBNAct(3, cout, 1, act=False))
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor, image_pooled: torch.Tensor) -> torch.Tensor:
        out = torch.cat([F.avg_pool2d(x, 3, 2, 1), self.eesp(x)], 1)
        return self.act(out + self.inp_reinf(image_pooled))


class EfficientPyramidPool(nn.Module):
    """Project, depthwise 3x3 at scales (2, 1.5, 1, 0.5, 0.1) of the map, merge with a shuffle and grouped convs.

    ``symbolic_shapes``: compute the level sizes and pooling from the (traced) tensor shapes, for an export with
    dynamic height and width; off, they are Python ints of the current size (faster: average pooling + row
    selection instead of dense pooling matrices). Both give the same values.
    """

    def __init__(self, cin: int, proj: int, cout: int, last_layer_br: bool = True, symbolic_shapes: bool = False) -> None:
        super().__init__()
        self.symbolic_shapes = symbolic_shapes
        self.projection_layer = _CBRSeq(cin, proj, 1)
        self.stages = nn.ModuleList(nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False) for _ in PYRAMID_SCALES)
        self.merge_layer = nn.Sequential(_BRSeq(proj * len(PYRAMID_SCALES)), _Shuffle(len(PYRAMID_SCALES)),
                                         _CBRSeq(proj * len(PYRAMID_SCALES), proj, 3, groups=proj),
                                         nn.Conv2d(proj, cout, 1, bias=not last_layer_br))
        self.br = _BRSeq(cout) if last_layer_br else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        # one type for both: adaptive_avg_pool only ever gets the int sizes of the else branch
        pool: Callable[..., torch.Tensor] = adaptive_avg_pool_symbolic if self.symbolic_shapes else adaptive_avg_pool
        if self.symbolic_shapes:
            height, width = x.shape[-2], x.shape[-1]
        else:
            height, width = int(x.shape[-2]), int(x.shape[-1])
        outs = []
        for scale, stage in zip(PYRAMID_SCALES, self.stages):
            size = (pyramid_size(height, scale), pyramid_size(width, scale))
            if scale > 1:
                up = F.interpolate(x, size=size, mode="bilinear", align_corners=True)  # type: ignore[arg-type]  # stub omits traced 0-d tensor sizes, which interpolate takes
                outs.append(pool(stage(up), (height, width)))
            elif scale < 1:
                low = stage(pool(x, size))
                outs.append(F.interpolate(low, size=(height, width), mode="bilinear", align_corners=True))
            else:
                outs.append(stage(x))
        out = self.merge_layer(torch.cat(outs, 1))
        return self.br(out) if self.br is not None else out


class EfficientPWConv(nn.Module):
    """Grouped 3x3 expansion gated by a global-context sigmoid."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.wt_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())
        self.expansion_layer = _CBRSeq(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


class _EncoderLevels(nn.Module):
    """ESPNetv2 levels 1-4 (the ImageNet network without level 5 and classifier), stored as ``base_net``."""

    def __init__(self, channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.level1 = _ConvBNAct(3, c1, 3, stride=2)
        self.level2_0 = DownSampler(c1, c2, RECEPTIVE_LIMITS["level2_0"])
        self.level3_0 = DownSampler(c2, c3, RECEPTIVE_LIMITS["level3_0"])
        self.level3 = nn.ModuleList(EESP(c3, c3, 1, RECEPTIVE_LIMITS["level3"]) for _ in range(LEVEL3_REPEATS))
        self.level4_0 = DownSampler(c3, c4, RECEPTIVE_LIMITS["level4_0"])
        self.level4 = nn.ModuleList(EESP(c4, c4, 1, RECEPTIVE_LIMITS["level4"]) for _ in range(LEVEL4_REPEATS))


class ESPNetv2(SegmentationNet):
    """ESPNetv2 segmentation network of width ``s`` with EdgeNets' Cityscapes decoder (16 base decoder planes).

    ``symbolic_shapes``: trace shape arithmetic symbolically (see ``EfficientPyramidPool``), for dynamic-size
    ONNX export; ``export_to_proto`` switches it on for the duration of a dynamic export.
    """

    def __init__(self, s: float = 2.0, working_size: tuple[int, int] | None = None,
                 symbolic_shapes: bool = False) -> None:
        super().__init__(working_size)
        if s not in LEVEL_CHANNELS:
            raise ValueError(f"ESPNetv2 width s={s} not supported; expected one of {sorted(LEVEL_CHANNELS)}")
        self.s = s
        channels = LEVEL_CHANNELS[s]
        self.base_net = _EncoderLevels(channels)
        dec = (64, 48, 32, CITYSCAPES_OUTPUTS)
        proj = min(CITYSCAPES_OUTPUTS // 2, 16)
        self.bu_dec_l1 = EfficientPyramidPool(channels[3], proj, dec[0], symbolic_shapes=symbolic_shapes)
        self.bu_dec_l2 = EfficientPyramidPool(dec[0], proj, dec[1], symbolic_shapes=symbolic_shapes)
        self.bu_dec_l3 = EfficientPyramidPool(dec[1], proj, dec[2], symbolic_shapes=symbolic_shapes)
        self.bu_dec_l4 = EfficientPyramidPool(dec[2], proj, dec[3], last_layer_br=False, symbolic_shapes=symbolic_shapes)
        self.merge_enc_dec_l2 = EfficientPWConv(channels[2], dec[0])
        self.merge_enc_dec_l3 = EfficientPWConv(channels[1], dec[1])
        self.merge_enc_dec_l4 = EfficientPWConv(channels[0], dec[2])
        self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(dec[0]), nn.PReLU(dec[0]))
        self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(dec[1]), nn.PReLU(dec[1]))
        self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(dec[2]), nn.PReLU(dec[2]))

    def logits_normalised(self, x: torch.Tensor) -> torch.Tensor:
        net = self.base_net
        # image pyramid for input reinforcement: pooled 2, 3 and 4 times (the sizes of levels 2, 3, 4)
        pooled = [x]
        for _ in range(4):
            pooled.append(F.avg_pool2d(pooled[-1], 3, 2, 1))
        l1 = net.level1(x)
        l2 = net.level2_0(l1, pooled[2])
        l3 = net.level3_0(l2, pooled[3])
        for block in net.level3:
            l3 = block(l3)
        l4 = net.level4_0(l3, pooled[4])
        for block in net.level4:
            l4 = block(l4)
        out = self.bu_dec_l1(l4)
        for skip, merge, br, dec in ((l3, self.merge_enc_dec_l2, self.bu_br_l2, self.bu_dec_l2),
                                     (l2, self.merge_enc_dec_l3, self.bu_br_l3, self.bu_dec_l3),
                                     (l1, self.merge_enc_dec_l4, self.bu_br_l4, self.bu_dec_l4)):
            out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            out = dec(br(merge(skip) + out))
        # slice first: per-channel interpolation commutes with it, and the full-size copy of the extra channel goes
        return F.interpolate(out[:, :NUM_CLASSES], size=x.shape[-2:], mode="bilinear", align_corners=True)


def parse_weights_name(path: str | os.PathLike[str]) -> tuple[float, tuple[int, int]]:
    """Width s and training size (height, width) from an EdgeNets file name ``espnetv2_s_<s>_city_<W>x<H>.pth``."""
    match = FILE_NAME.search(Path(path).name)
    if match is None:
        raise ModelError(f"{path}: cannot read the ESPNetv2 width from the file name; expected "
                         "espnetv2_s_<s>_city_<W>x<H>.pth (or pass s explicitly)")
    return float(match["s"]), (int(match["h"]), int(match["w"]))


def load_espnetv2(path: str | os.PathLike[str], s: float | None = None,
                  working_size: tuple[int, int] | None = None) -> ESPNetv2:
    """ESPNetv2 with the Cityscapes weights in ``path`` (width read from the file name unless ``s`` is given).

    Refuses a file whose keys or shapes differ from the architecture, listing the first few.
    """
    if s is None:
        s, _ = parse_weights_name(path)
    model = ESPNetv2(s, working_size)
    load_exact(model, read_state_dict(path), str(path))
    return model.eval()
