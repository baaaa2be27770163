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

EPS = 1e-8

# Synboost's VGG19 perceptual loss: slices of vgg19.features and their weights (deepest level weight 1).
VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
PERCEPTUAL_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def _per_image(x: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per-image min or max of N x H x W, shaped N x 1 x 1 for broadcasting."""
    flat = x.flatten(1)
    value = flat.amin(1) if reduce == "min" else flat.amax(1)
    return value.view(-1, 1, 1)


def entropy(probs: torch.Tensor, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Raw entropy -Σ_c p_c log p_c (nats) of N x C x H x W probabilities → N x H x W.

    ``log_probs``: the log-softmax of the same logits, when the caller has it; it spares a logarithm of every
    channel (the costliest step of the three maps on ONNX Runtime) and is exact where p underflows, instead of
    clamping p at ``EPS`` (the two differ by at most C·EPS·|log EPS|, 7e-6 nats for 19 classes).
    """
    if log_probs is None:
        log_probs = torch.log(probs.clamp_min(EPS))
    return -(probs * log_probs).sum(1)


def softmax_distance(probs: torch.Tensor, winner: torch.Tensor | None = None) -> torch.Tensor:
    """Raw top-1 minus top-2 probability d = p_(1) - p_(2) of N x C x H x W probabilities → N x H x W.

    The runner-up is the maximum once the arg-max class is pushed below 0, which equals top-k's second value, ties
    included; ONNX Runtime's TopK over the channel axis of NCHW costs about twice these reductions. ``winner`` is
    the one-hot of an arg-max the caller already has (the segmentation's, N x C x H x W; computed here if None):
    any arg-max gives the same d, because two classes can both be the maximum only if they tie, and then d = 0.
    """
    if winner is None:
        classes = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1)
        winner = (classes == probs.argmax(1, keepdim=True)).to(probs.dtype)
    return probs.amax(1) - (probs - 2.0 * winner).amax(1)


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
    """Softmax probabilities + image + resynthesis → N x 3 x H x W maps (entropy, softmax distance, perceptual)."""

    def __init__(self, extractor: FeaturePyramid) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, probs: torch.Tensor, image_normalised: torch.Tensor, synthesis_normalised: torch.Tensor) -> torch.Tensor:
        return self.from_features(probs, self.features(image_normalised, synthesis_normalised))

    def features(self, image_normalised: torch.Tensor, synthesis_normalised: torch.Tensor) -> list[torch.Tensor]:
        """The extractor's pyramid of image and resynthesis in one batched pass (2N x C x h x w per level: the
        image's first, then the resynthesis')."""
        return self.extractor.features(torch.cat([image_normalised, synthesis_normalised], 0))

    def from_features(self, probs: torch.Tensor, both: Sequence[torch.Tensor], winner: torch.Tensor | None = None,
                      log_probs: torch.Tensor | None = None) -> torch.Tensor:
        """The three maps from the softmax and ``features``' output (``winner``: see ``softmax_distance``,
        ``log_probs``: see ``entropy``)."""
        size = probs.shape[-2:]  # kept symbolic (no int()) so a dynamic-shape ONNX export follows the input
        n = probs.shape[0]
        perceptual = perceptual_difference([f[:n] for f in both], [f[n:] for f in both], self.extractor.weights, size)
        return torch.stack([normalise_entropy(entropy(probs, log_probs)),
                            normalise_softmax_distance(softmax_distance(probs, winner)),
                            normalise_min_max(perceptual)], 1)
