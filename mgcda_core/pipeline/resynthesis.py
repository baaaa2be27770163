"""Resynthesis of an image from its semantic map (Synboost's step 3; docs/PIPELINE.md): a training-free default and a SPADE-style
generator for user weights. Both map N x H x W train ids (plus the image, for the fallback) to N x 3 x H x W RGB
in [0, 1]."""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.nn import functional as F

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.model.segmentation.base import read_state_dict
from mgcda_core.model.spade import SPADE
from mgcda_core.model.weights_file import load_exact


def one_hot(semantic: torch.Tensor, num_classes: int = NUM_CLASSES, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N x H x W int64 train ids → N x C x H x W one-hot of ``dtype`` (exportable: comparison with an arange)."""
    classes = torch.arange(num_classes, device=semantic.device).view(1, -1, 1, 1)
    return (semantic.unsqueeze(1) == classes).to(dtype)


def class_mean_colours(image: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per image and class, the mean RGB of the image's pixels of that class → N x C x 3 (0 for absent classes).

    Scatter-mean written as a batched matrix product over the one-hot map (no loop over pixels or classes).
    """
    sums = torch.matmul(onehot.flatten(2), image.flatten(2).transpose(1, 2))
    counts = onehot.sum((2, 3)).unsqueeze(-1)
    return sums / counts.clamp_min(1.0)


class ClassMeanResynthesis(nn.Module):
    """Training-free resynthesis: every pixel becomes the mean colour of the input pixels of its predicted class.

    For image x, prediction s and class c: μ_c = mean{x_p : s_p = c}; synthesis_p = μ_{s_p}. Optionally the
    result is box-blurred (``smooth`` > 1, odd kernel) to soften class boundaries.

    Why anomalies come out dissimilar: an unexpected object is predicted as some known class (mostly road,
    the class around it); it is repainted with that class's mean colour in this frame, which the many true
    pixels of the class dominate, so its own colours and texture are gone and the perceptual difference and the
    dissimilarity network see a large difference there. Correctly segmented regions keep their class's average
    appearance, so they differ less. Unlike a GAN it needs no weights and cannot hallucinate; it also removes
    texture everywhere, which the dissimilarity network, trained on the same synthesis, learns to discount.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, smooth: int = 1) -> None:
        super().__init__()
        if smooth < 1 or smooth % 2 == 0:
            raise ValueError(f"smooth must be an odd kernel size ≥ 1, got {smooth}")
        self.num_classes = num_classes
        self.smooth = smooth

    def forward(self, semantic: torch.Tensor, image: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """``onehot``: ``semantic``'s one-hot in ``image``'s dtype when the caller already has it."""
        if onehot is None:
            onehot = one_hot(semantic, self.num_classes, image.dtype)
        # each pixel picks its class's colour: (N x 3 x C) @ (N x C x HW)
        colours = class_mean_colours(image, onehot).transpose(1, 2)
        synthesis = torch.matmul(colours, onehot.flatten(2)).view(image.shape)
        if self.smooth > 1:
            synthesis = F.avg_pool2d(synthesis, self.smooth, 1, self.smooth // 2, count_include_pad=False)
        return synthesis


class SPADEResBlock(nn.Module):
    """SPADE residual block (Park et al. 2019): two SPADE → LeakyReLU(0.2) → conv3x3, learned 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, label_channels: int) -> None:
        super().__init__()
        middle = min(cin, cout)
        self.norm_0, self.conv_0 = SPADE(cin, label_channels), nn.Conv2d(cin, middle, 3, padding=1)
        self.norm_1, self.conv_1 = SPADE(middle, label_channels), nn.Conv2d(middle, cout, 3, padding=1)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s, self.conv_s = SPADE(cin, label_channels), nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return shortcut + dx


class SPADEGenerator(nn.Module):
    """SPADE-style generator (no noise input, as Synboost's resynthesis) for user weights.

    Architecture: the one-hot map nearest-downsampled by 2^num_up → conv3x3 (C → 16·nf) → SPADEResBlock(16nf,16nf)
    → [×2 nearest upsample → SPADEResBlock] num_up times, channels 16nf, 16nf, 8nf, 4nf, 2nf, nf (capped to the
    list) → LeakyReLU(0.2) → conv3x3 (→ 3) → tanh, mapped from [-1, 1] to [0, 1]. Input height and width must be
    divisible by 2^num_up. State-dict keys are this module's names (``fc``, ``head``, ``ups.i``, ``conv_img``);
    ``load_spade_generator`` refuses any file that does not match exactly.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, nf: int = 64, num_up: int = 5) -> None:
        super().__init__()
        self.num_classes, self.num_up = num_classes, num_up
        widths = [16 * nf, 16 * nf, 8 * nf, 4 * nf, 2 * nf, nf][: num_up + 1]
        self.fc = nn.Conv2d(num_classes, widths[0], 3, padding=1)
        self.head = SPADEResBlock(widths[0], widths[0], num_classes)
        self.ups = nn.ModuleList(SPADEResBlock(widths[min(i, len(widths) - 1)], widths[min(i + 1, len(widths) - 1)],
                                               num_classes) for i in range(num_up))
        self.conv_img = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, semantic: torch.Tensor, image: torch.Tensor | None = None,
                onehot: torch.Tensor | None = None) -> torch.Tensor:
        """``image`` is not used (the generator paints from the labels alone); ``onehot`` as in
        ``ClassMeanResynthesis``."""
        segmap = one_hot(semantic, self.num_classes, self.fc.weight.dtype) if onehot is None else onehot.to(self.fc.weight.dtype)
        factor = 2 ** self.num_up
        x = self.fc(F.interpolate(segmap, size=(segmap.shape[-2] // factor, segmap.shape[-1] // factor), mode="nearest"))
        x = self.head(x, segmap)
        for block in self.ups:
            x = block(F.interpolate(x, scale_factor=2.0, mode="nearest"), segmap)
        return (torch.tanh(self.conv_img(F.leaky_relu(x, 0.2))) + 1) / 2


def load_spade_generator(path: str | os.PathLike[str], nf: int = 64, num_up: int = 5) -> SPADEGenerator:
    """A ``SPADEGenerator`` with the user's weights from ``path``; mismatched keys or shapes are refused."""
    model = SPADEGenerator(NUM_CLASSES, nf, num_up)
    load_exact(model, read_state_dict(path), str(path))
    return model.eval()
