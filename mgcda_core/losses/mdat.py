"""Multi-source Domain Adversarial Training (MDAT): label schedule and least-squares losses.

MGCDA (Zhang et al., ACM MM 2023), section 3.2. Two source domains: VoidClass (V, domain 0) and
AnomalyMix (A, domain 1). The domain classifiers D_f / D_o output a raw per-pixel map P (no sigmoid: the
losses are least squares, LSGAN-style). Domain labels are per pixel: V -> tau, A -> 1 - tau, with tau
decaying from tau_b = 1 to 0.5 over training (eq. 1, dynamic label smoothing).

Sides: tau >= 0.5, so V is the *high* side and A the *low* side of the 0.5 decision threshold. This fixes
``classifier_accuracy``: a V pixel is classified correctly when P > 0.5, an A pixel when P < 0.5.

How a trainer alternates (the losses here are pure; the schedule is the trainer's job):
1. network step: the classifier sees the *non-detached* features / anomaly map so gradients reach the
   segmentation (dissimilarity) network; add ``lambda * generator_adversarial_loss(P_V, P_A, tau)`` (crossed
   labels, eq. 2) to L_CE; the classifier's weights get no gradient from it (frozen).
2. classifier step: minimise ``classifier_loss(P_V, P_A, tau)`` (its own, uncrossed labels) with respect to the
   classifier's weights only (detached inputs). ``mgcda_core.training.step`` does both from one forward pass,
   each backward restricted to its own parameters.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = [
    "tau_at",
    "domain_labels",
    "generator_adversarial_loss",
    "classifier_loss",
    "classifier_accuracy",
]

# Lowest label value: at tau = 0.5 both domains get the same label, i.e. full smoothing.
TAU_MIN = 0.5


def _check_int(name: str, value: object) -> int:
    # bool is an int subclass; True as a step count is a caller bug, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def _check_tau(name: str, tau: object) -> float:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(tau).__name__} {tau!r}")
    tau = float(tau)
    if not (TAU_MIN <= tau <= 1.0):
        raise ValueError(f"{name} must lie in [{TAU_MIN}, 1] (V is the high side of the labels), got {tau}")
    return tau


def tau_at(step: int, max_steps: int, tau_b: float = 1.0, dynamic: bool = True) -> float:
    """Dynamic label smoothing, MGCDA eq. 1: tau = tau_b - (tau_b - 0.5) * i / max_i.

    ``step`` is the current iteration i (0-based, 0 <= i <= max_steps), ``max_steps`` the total number of
    iterations max_i (> 0). With ``dynamic=False`` (the ablation without dynamic label smoothing) tau stays
    tau_b for the whole run. Returns 1.0 at the start, 0.75 midway and 0.5 at the end for tau_b = 1.
    """
    step = _check_int("step", step)
    max_steps = _check_int("max_steps", max_steps)
    tau_b = _check_tau("tau_b", tau_b)
    if max_steps <= 0:
        raise ValueError(f"max_steps must be a positive number of iterations, got {max_steps}")
    if not 0 <= step <= max_steps:
        raise ValueError(f"step must lie in [0, max_steps={max_steps}], got {step}")
    if not dynamic:
        return tau_b
    return tau_b - (tau_b - TAU_MIN) * step / max_steps


def _check_maps(pred_v: Tensor, pred_a: Tensor) -> None:
    for name, pred in (("pred_v", pred_v), ("pred_a", pred_a)):
        if not isinstance(pred, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor domain map, got {type(pred).__name__}")
        if not pred.is_floating_point():
            raise TypeError(f"{name} must be a floating-point domain map, got dtype {pred.dtype}")
        if pred.ndim != 4 or pred.shape[1] != 1:
            raise ValueError(f"{name} must be a B x 1 x H x W domain-classifier map, got shape {tuple(pred.shape)}")
        if pred.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(pred.shape)}): each domain needs at least one pixel")


def domain_labels(tau: float) -> tuple[float, float]:
    """Per-pixel domain labels (Y_V, Y_A) = (tau, 1 - tau) for the given label-smoothing value tau."""
    tau = _check_tau("tau", tau)
    return tau, 1.0 - tau


def _least_squares(pred_v: Tensor, pred_a: Tensor, target_v: float, target_a: float) -> Tensor:
    # Each domain is averaged over its own pixels, so the two terms weigh equally whatever the batch split.
    return (pred_v - target_v).pow(2).mean() + (pred_a - target_a).pow(2).mean()


def generator_adversarial_loss(pred_v: Tensor, pred_a: Tensor, tau: float) -> Tensor:
    """MGCDA eq. 2, crossed least squares for the segmentation network: mean((P_V - Y_A)^2) + mean((P_A - Y_V)^2).

    ``pred_v`` / ``pred_a``: B x 1 x H x W raw classifier maps of the V and A images (batches may differ in
    size); Y_V = tau, Y_A = 1 - tau. Minimising it pushes each domain towards the other's label, which makes
    features / outputs domain-invariant. Gradients must flow into the network that produced the inputs.
    """
    _check_maps(pred_v, pred_a)
    y_v, y_a = domain_labels(tau)
    return _least_squares(pred_v, pred_a, y_a, y_v)


def classifier_loss(pred_v: Tensor, pred_a: Tensor, tau: float) -> Tensor:
    """Least-squares loss of the domain classifiers with their own labels: mean((P_V - Y_V)^2) + mean((P_A - Y_A)^2).

    The uncrossed counterpart of eq. 2; computed on classifier outputs of *detached* inputs so that only the
    classifier learns from it.
    """
    _check_maps(pred_v, pred_a)
    y_v, y_a = domain_labels(tau)
    return _least_squares(pred_v, pred_a, y_v, y_a)


@torch.no_grad()
def classifier_accuracy(pred_v: Tensor, pred_a: Tensor, mask_v: Tensor | None = None,
                        mask_a: Tensor | None = None) -> tuple[float | None, float | None]:
    """Per-domain pixel accuracy (acc_V, acc_A) of a domain classifier, in [0, 1].

    V is the high side of the labels (tau >= 0.5): a V pixel is correct when P_V > 0.5, an A pixel when
    P_A < 0.5. A pixel exactly at 0.5 is undecided and counts as wrong for either domain.
    ``mask_v`` / ``mask_a`` (boolean, the maps' shape) restrict a domain to some pixels, e.g. its anomaly
    pixels; a domain whose mask selects no pixel gets None. Without masks every pixel counts.
    """
    _check_maps(pred_v, pred_a)
    correct_v, correct_a = pred_v > TAU_MIN, pred_a < TAU_MIN
    return _masked_mean(correct_v, mask_v, "mask_v"), _masked_mean(correct_a, mask_a, "mask_a")


def _masked_mean(correct: Tensor, mask: Tensor | None, name: str) -> float | None:
    if mask is None:
        return correct.float().mean().item()
    if mask.dtype != torch.bool or mask.shape != correct.shape:
        raise ValueError(f"{name} must be a boolean mask of shape {tuple(correct.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    selected = int(mask.sum())
    return None if selected == 0 else int((correct & mask).sum()) / selected
