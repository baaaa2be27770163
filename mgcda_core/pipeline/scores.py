"""Anomaly scores: pure functions, higher = more anomalous, N x C x H x W logits → N x H x W raw scores.

Training-free rows of the MGCDA paper's comparison (Zhang et al., ACM MM 2023) and the Synboost scores:
- ``msp``          1 - max_c softmax(l)_c                          (Hendrycks & Gimpel 2017)
- ``entropy``      -Σ_c p_c log p_c / log C, in [0, 1]             (normalised by its maximum log C)
- ``max_logit``    -max_c l_c                                       (Hendrycks et al. 2022)
- ``energy``       E(l) = -logsumexp_c l_c; anomalous pixels have high energy (Liu et al. 2020, eq. 1 with T=1)
- ``sml``          -(max_c l_c - μ_ĉ) / σ_ĉ with ĉ = argmax, per-class statistics of the max logit over pixels
                   predicted ĉ on a dataset the user names (Jung et al. 2021, eq. 2; ``python -m mgcda_core.sml_stats``)
- ``dissimilarity`` softmax(d)[:, 1] of the dissimilarity network's 2 logits d (Synboost)
- ``ensemble``     0.75 · dissimilarity + 0.25 · normalised entropy map (Synboost's released inference)
"""

from __future__ import annotations

import math

import torch

SCORES = ("dissimilarity", "ensemble", "max_logit", "energy", "entropy", "msp", "sml")
TRAINING_FREE = ("max_logit", "energy", "entropy", "msp", "sml")
TRAINED = tuple(score for score in SCORES if score not in TRAINING_FREE)  # need a dissimilarity network
ENSEMBLE_WEIGHT = 0.75


def log_softmax_channels(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over dim 1 of N x C x H x W, written as max-shifted elementwise ops.

    Same values as ``torch.log_softmax(x, 1)``; spelled out because ONNX Runtime's CPU Softmax over the channel
    axis of an NCHW tensor transposes the whole map (measured: 63 ms of a 215 ms graph at 256x512 on 2 cores),
    while reductions over dim 1 and elementwise ops stay in place.
    """
    shifted = logits - logits.amax(1, keepdim=True)
    return shifted - shifted.exp().sum(1, keepdim=True).log()


def msp(logits: torch.Tensor) -> torch.Tensor:
    """1 - maximum softmax probability = 1 - 1 / Σ_c exp(l_c - max l)."""
    return 1.0 - 1.0 / (logits - logits.amax(1, keepdim=True)).exp().sum(1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy divided by log C (its maximum), so in [0, 1]."""
    log_p = log_softmax_channels(logits)
    return -(log_p.exp() * log_p).sum(1) / math.log(logits.shape[1])


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum logit."""
    return -logits.amax(1)


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Free energy -logsumexp_c l_c (temperature 1): high for anomalies."""
    return -torch.logsumexp(logits, 1)


def sml(logits: torch.Tensor, class_mean: torch.Tensor, class_std: torch.Tensor) -> torch.Tensor:
    """Negative standardised max logit -(max l - μ_ĉ) / σ_ĉ, ĉ = argmax; ``class_mean``/``class_std`` have C entries."""
    if class_mean.shape != (logits.shape[1],) or class_std.shape != (logits.shape[1],):
        raise ValueError(f"SML statistics must have {logits.shape[1]} entries, got mean {tuple(class_mean.shape)} "
                         f"and std {tuple(class_std.shape)}")
    top, index = logits.max(1)
    return -(top - class_mean[index]) / class_std[index]


def dissimilarity(dissim_logits: torch.Tensor) -> torch.Tensor:
    """softmax(d)[:, 1] of the dissimilarity network's N x 2 x H x W logits, i.e. sigmoid(d_1 - d_0)."""
    if dissim_logits.shape[1] != 2:
        raise ValueError(f"dissimilarity logits must have 2 channels, got {dissim_logits.shape[1]}")
    return torch.sigmoid(dissim_logits[:, 1] - dissim_logits[:, 0])


def ensemble(dissim_prob: torch.Tensor, entropy_map: torch.Tensor, weight: float = ENSEMBLE_WEIGHT) -> torch.Tensor:
    """weight · dissimilarity + (1 - weight) · entropy map (Synboost: 0.75 / 0.25, entropy as normalised prior)."""
    return weight * dissim_prob + (1.0 - weight) * entropy_map
