"""The three uncertainty maps fed to the dissimilarity network as its prior (Synboost, Di Biase et al., CVPR 2021; docs/PIPELINE.md).

Per-image normalisation follows Synboost's code exactly (giandbt/synboost @ eaa4d3a5), so maps computed here
match its published preprocessed training data:
- entropy H = -Σ_c p_c log p_c, normalised as (H - min H) / max H   (sic: divides by max, not max - min);
- softmax distance d = p_top1 - p_top2, map = 1 - (d - min d) / max d   (same quirk);
- perceptual difference P, normalised (P - min P) / (max P - min P).
All three therefore lie in [0, 1] (H, d ≥ 0 so the quirk never leaves the range). A denominator below
``EPS`` (a constant map) is replaced by ``EPS`` so a constant map gives 0 (entropy, perceptual) or 1 (distance)
instead of NaN. ``prepare`` and inference both call these functions, so training and deployment inputs agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mgcda_core.pipeline.resynthesis import one_hot

EPS = 1e-8

# Synboost's VGG19 perceptual loss: slices of vgg19.features and their weights (deepest level weight 1).
VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
PERCEPTUAL_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def _per_image(x: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per-image min or max of N x H x W, shaped N x 1 x 1 for broadcasting."""
    flat = x.flatten(1)
    value = flat.amin(1) if reduce == "min" else flat.amax(1)
    return value.view(-1, 1, 1)


def entropy_and_softmax_distance(logits: torch.Tensor, winner: torch.Tensor | None = None
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw softmax entropy H = -Σ_c p_c log p_c (nats) and top-1 minus top-2 probability d = p_(1) - p_(2) of
    N x C x H x W logits l → two N x H x W maps, computed without forming p or log p.

    With z = l - max_c l, e = exp(z) and S = Σ_c e_c, p = e / S and log p = z - log S, so
        H = log S - Σ_c e_c z_c / S,      d = (1 - max_{c ≠ ĉ} e_c) / S,
    because the arg-max ĉ has z = 0, e = 1 exactly. Equal to the textbook forms up to float32 rounding, and exact
    where p underflows (no log of 0). Why this form: on a CPU each full-resolution pass over the C channels is a
    memory-bound operator, and this takes four fewer than p, log p, p log p and the top two of p (the shipped
    pipeline on one thread: about 5 % less time, docs/RESULTS.md).

    ``winner``: the one-hot of an arg-max the caller already has (N x C x H x W; computed here if None). Any arg-max
    gives the same d: e - winner zeroes the winner's e = 1 and leaves the others in [0, 1], so its maximum is the
    runner-up's e (a tied runner-up has e = 1, and d = 0). ONNX Runtime's TopK over the channel axis of NCHW costs
    about twice these reductions.
    """
    shifted = logits - logits.amax(1, keepdim=True)
    exp = shifted.exp()
    total = exp.sum(1)
    if winner is None:
        winner = one_hot(logits.argmax(1), logits.shape[1], logits.dtype)
    entropy = total.log() - (exp * shifted).sum(1) / total
    distance = (1.0 - (exp - winner).amax(1)) / total
    return entropy, distance


def normalise_entropy(h: torch.Tensor) -> torch.Tensor:
    """Synboost's per-image entropy normalisation (h - min) / max (N x H x W → [0, 1])."""
    return (h - _per_image(h, "min")) / _per_image(h, "max").clamp_min(EPS)


def normalise_softmax_distance(d: torch.Tensor) -> torch.Tensor:
    """Synboost's per-image 1 - (d - min) / max (N x H x W → [0, 1]; high = top two classes close)."""
    return 1.0 - (d - _per_image(d, "min")) / _per_image(d, "max").clamp_min(EPS)


def normalise_min_max(x: torch.Tensor) -> torch.Tensor:
    """Per-image (x - min) / (max - min) (N x H x W → [0, 1])."""
    low = _per_image(x, "min")
    return (x - low) / (_per_image(x, "max") - low).clamp_min(EPS)


def perceptual_difference(features_image: Sequence[torch.Tensor], features_synthesis: Sequence[torch.Tensor],
                          weights: Sequence[float], size: Sequence[int]) -> torch.Tensor:
    """Raw perceptual difference Σ_l w_l · up(mean_c |f_l(x) - f_l(x_syn)|) → N x H x W (docs/PIPELINE.md).

    Each level's channel-mean absolute difference is bilinearly upsampled to ``size`` before weighting.
    """
    if not (len(features_image) == len(features_synthesis) == len(weights)):
        raise ValueError(f"perceptual difference needs one weight per level: {len(features_image)} image levels, "
                         f"{len(features_synthesis)} synthesis levels, {len(weights)} weights")
    total: torch.Tensor | None = None
    for f_x, f_s, w in zip(features_image, features_synthesis, weights):
        level = (f_x - f_s).abs().mean(1, keepdim=True)
        level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        total = w * level if total is None else total + w * level
    if total is None:
        raise ValueError("perceptual difference needs at least one feature level, got none")
    return total[:, 0]


class FeaturePyramid(nn.Module):
    """A frozen feature extractor for the perceptual difference: ImageNet-normalised N x 3 x H x W → list of maps.

    ``source`` says which pretrained weights it holds (reported in outputs); ``weights`` are the level weights.
    """

    source: str = "unspecified"
    weights: tuple[float, ...] = PERCEPTUAL_WEIGHTS

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError


class UncertaintyMaps(nn.Module):
    """Segmentation logits + image + resynthesis → N x 3 x H x W maps (entropy, softmax distance, perceptual)."""

    def __init__(self, extractor: FeaturePyramid) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, logits: torch.Tensor, image_normalised: torch.Tensor, synthesis_normalised: torch.Tensor
                ) -> torch.Tensor:
        return self.from_features(logits, self.features(image_normalised, synthesis_normalised))

    def features(self, image_normalised: torch.Tensor, synthesis_normalised: torch.Tensor) -> list[torch.Tensor]:
        """The extractor's pyramid of image and resynthesis in one batched pass (2N x C x h x w per level: the
        image's first, then the resynthesis')."""
        return self.extractor.features(torch.cat([image_normalised, synthesis_normalised], 0))

    def from_features(self, logits: torch.Tensor, both: Sequence[torch.Tensor], winner: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The three maps from the segmentation logits and ``features``' output (``winner``: see
        ``entropy_and_softmax_distance``)."""
        size = logits.shape[-2:]  # kept symbolic (no int()) so a dynamic-shape ONNX export follows the input
        n = logits.shape[0]
        perceptual = perceptual_difference([f[:n] for f in both], [f[n:] for f in both], self.extractor.weights, size)
        entropy, distance = entropy_and_softmax_distance(logits, winner)
        return torch.stack([normalise_entropy(entropy), normalise_softmax_distance(distance),
                            normalise_min_max(perceptual)], 1)
