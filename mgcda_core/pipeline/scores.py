"""Anomaly scores: pure functions, higher = more anomalous, N x C x H x W logits → N x H x W raw scores.

Training-free rows of the MGCDA paper's comparison (SPEC §2) and the Synboost scores:
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
ENSEMBLE_WEIGHT = 0.75


def msp(logits: torch.Tensor) -> torch.Tensor:
    """1 - maximum softmax probability."""
    return 1.0 - torch.softmax(logits, 1).amax(1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy divided by log C (its maximum), so in [0, 1]."""
    log_p = torch.log_softmax(logits, 1)
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
    """softmax(d)[:, 1] of the dissimilarity network's N x 2 x H x W logits."""
    return torch.softmax(dissim_logits, 1)[:, 1]


def ensemble(dissim_prob: torch.Tensor, entropy_map: torch.Tensor, weight: float = ENSEMBLE_WEIGHT) -> torch.Tensor:
    """weight · dissimilarity + (1 - weight) · entropy map (Synboost: 0.75 / 0.25, entropy as normalised prior)."""
    return weight * dissim_prob + (1.0 - weight) * entropy_map
