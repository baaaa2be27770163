"""Operating-point curves shared by the exact (Fishyscapes) and binned (SegmentMeIfYouCan) protocols.

A curve is a list of thresholds from high to low with the cumulative true- and false-positive counts of
"score >= threshold" at each; every metric here is a pure function of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgcda_core.errors import DataError


class MetricInputError(DataError):
    """The score/label data cannot give the requested metric (e.g. no anomaly pixel at all)."""


def require_both_classes(num_pos: int, num_neg: int) -> None:
    """Raise ``MetricInputError`` unless there is at least one anomaly and one normal pixel."""
    if num_pos <= 0 or num_neg <= 0:
        raise MetricInputError(
            f"the evaluated pixels hold {num_pos} anomaly (label 1) and {num_neg} normal (label 0) pixels: "
            "AP, FPR95 and AUROC need at least one of each"
        )


@dataclass(frozen=True)
class Curve:
    """Cumulative confusion counts at descending thresholds (``tps[k]``, ``fps[k]`` count ``score >= thresholds[k]``)."""

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    num_pos: int
    num_neg: int

    def __post_init__(self) -> None:
        require_both_classes(self.num_pos, self.num_neg)

    @property
    def tpr(self) -> np.ndarray:
        return self.tps / self.num_pos

    @property
    def fpr(self) -> np.ndarray:
        return self.fps / self.num_neg

    @property
    def precision(self) -> np.ndarray:
        """tp / (tp + fp); 1 where nothing is predicted yet (the curve's start, as SegmentMeIfYouCan does)."""
        predicted = self.tps + self.fps
        out = np.ones(predicted.shape, dtype=np.float64)
        np.divide(self.tps, predicted, out=out, where=predicted > 0)
        return out

    def with_end_points(self) -> Curve:
        """Add the "nothing predicted" (+inf) and "everything predicted" (-inf) points where missing."""
        thresholds, tps, fps = self.thresholds, self.tps, self.fps
        if tps.size == 0 or tps[0] != 0 or fps[0] != 0:
            thresholds = np.r_[np.inf, thresholds]
            tps, fps = np.r_[0, tps], np.r_[0, fps]
        if tps[-1] != self.num_pos or fps[-1] != self.num_neg:
            thresholds = np.r_[thresholds, -np.inf]
            tps, fps = np.r_[tps, self.num_pos], np.r_[fps, self.num_neg]
        return Curve(thresholds.astype(np.float64), tps.astype(np.float64), fps.astype(np.float64),
                     self.num_pos, self.num_neg)


def average_precision_step(curve: Curve) -> float:
    """Step-wise AP: sum_k (R_k - R_{k-1}) P_k over thresholds (sklearn's ``average_precision_score``)."""
    recall = curve.tpr
    return float(np.sum(np.diff(recall, prepend=0.0) * curve.precision))


def average_precision_trapezoid(curve: Curve) -> float:
    """AP as the trapezoidal area under the precision-recall curve (SegmentMeIfYouCan's binned AP)."""
    full = curve.with_end_points()
    return float(np.trapezoid(full.precision, full.tpr))


def auroc(curve: Curve) -> float:
    """Area under the ROC curve by the trapezoid rule, starting at (0, 0) and ending at (1, 1)."""
    full = curve.with_end_points()
    return float(np.trapezoid(full.tpr, full.fpr))


def fpr_at_tpr(curve: Curve, tpr_level: float = 0.95) -> tuple[float, float]:
    """(FPR, threshold) at the first threshold (from high to low) whose TPR >= ``tpr_level``.

    Returns FPR 1.0 and threshold -inf when the level is never reached (SegmentMeIfYouCan's convention); with
    the "everything predicted" end point a curve always reaches TPR 1, so this applies to levels above 1 only.
    """
    full = curve.with_end_points()
    index = int(np.searchsorted(full.tpr, tpr_level, side="left"))
    if index >= full.tpr.size:
        return 1.0, float("-inf")
    return float(full.fpr[index]), float(full.thresholds[index])


def best_f1(curve: Curve) -> tuple[float, float]:
    """(F1, threshold) of the point with the highest pixel F1 = 2tp / (2tp + fp + fn); first one on ties."""
    full = curve.with_end_points()
    f1 = 2 * full.tps / (2 * full.tps + full.fps + (full.num_pos - full.tps))
    index = int(np.argmax(f1))
    return float(f1[index]), float(full.thresholds[index])
