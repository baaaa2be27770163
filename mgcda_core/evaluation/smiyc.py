"""SegmentMeIfYouCan protocol, pixel level: per-frame binned confusion counts, accumulated as a stream.

Facts matched (SegmentMeIfYouCan/road-anomaly-benchmark, ``metrics/pixel_classification*.py``):
- ``percentiles`` (768 bins, their default "PixBinaryClass"): per frame, bin edges are the union of 0, 1 and
  ``min(768 // 2, n)`` quantiles of the anomaly scores and of the normal scores (duplicates removed);
- ``uniform`` (4096 bins, "PixBinaryClass-uniThr"): fixed edges over [0, 1];
- a bin's count belongs to the threshold at its lower edge (``score >= edge``); frames are merged by sorting
  all thresholds from high to low; repeated thresholds are collapsed to their last (complete) entry;
- AP = trapezoidal area under the binned PR curve (precision 1 before the first prediction), FPR95 = FPR at
  the first threshold with TPR >= 0.95 (1.0 if never reached), AUROC = trapezoid under the ROC curve.

Memory: uniform bins keep two fixed 4096-long count vectors; percentile bins keep at most 769 thresholds and
counts per frame (about 18 kB), independent of the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from mgcda_core.evaluation.curves import (
    Curve,
    auroc,
    average_precision_step,
    average_precision_trapezoid,
    best_f1,
    fpr_at_tpr,
)

BinStrategy = Literal["percentiles", "uniform"]
#: the two variants of the reference code: number of bins per strategy
DEFAULT_BINS: dict[str, int] = {"percentiles": 768, "uniform": 4096}


@dataclass(frozen=True)
class FrameHistogram:
    """Counts of one frame: ``tp_rel[k]``/``fp_rel[k]`` anomaly/normal pixels in the bin whose lower edge is
    ``thresholds[k]``; thresholds descending."""

    thresholds: np.ndarray
    tp_rel: np.ndarray
    fp_rel: np.ndarray


def bin_edges(scores: np.ndarray, is_anomaly: np.ndarray, strategy: BinStrategy, num_bins: int) -> np.ndarray:
    """Ascending bin edges of one frame for ``strategy`` (see the module docstring)."""
    if strategy == "uniform":
        finite = scores[np.isfinite(scores)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise ValueError(
                f"uniform SegmentMeIfYouCan bins cover [0, 1] but the scores span [{finite.min():.6g}, "
                f"{finite.max():.6g}]: use percentile bins or a score calibrated to [0, 1]"
            )
        return np.linspace(0.0, 1.0, num_bins + 1)
    if strategy != "percentiles":
        raise ValueError(f"unknown bin strategy {strategy!r}: expected 'percentiles' or 'uniform'")
    parts = [np.array([0.0, 1.0])]
    for values in (scores[is_anomaly], scores[~is_anomaly]):
        if values.size:
            parts.append(np.quantile(values, np.linspace(0.0, 1.0, min(num_bins // 2, values.size))))
    return np.unique(np.concatenate(parts))


def frame_histogram(scores: np.ndarray, is_anomaly: np.ndarray, strategy: BinStrategy, num_bins: int) -> FrameHistogram:
    """Binned anomaly/normal counts of one frame's labelled pixels (flat arrays)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_anomaly = np.asarray(is_anomaly, dtype=bool).ravel()
    edges = bin_edges(scores, is_anomaly, strategy, num_bins)
    tp_rel, _ = np.histogram(scores[is_anomaly], bins=edges)
    fp_rel, _ = np.histogram(scores[~is_anomaly], bins=edges)
    # high to low; each bin belongs to its lower edge
    return FrameHistogram(edges[-2::-1].copy(), tp_rel[::-1].copy(), fp_rel[::-1].copy())


class BinnedCurveAccumulator:
    """Streams frames into binned counts and turns them into one curve (SegmentMeIfYouCan pixel level)."""

    def __init__(self, strategy: BinStrategy = "percentiles", num_bins: int | None = None) -> None:
        if strategy not in DEFAULT_BINS:
            raise ValueError(f"unknown bin strategy {strategy!r}: expected one of {sorted(DEFAULT_BINS)}")
        self.strategy: BinStrategy = strategy
        self.num_bins = DEFAULT_BINS[strategy] if num_bins is None else int(num_bins)
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
        self._num_pos = 0
        self._num_neg = 0
        # uniform: fixed shared thresholds, summed counts; percentiles: per-frame lists merged at the end
        self._fixed: FrameHistogram | None = None
        self._frames: list[FrameHistogram] = []

    def add(self, scores: np.ndarray, is_anomaly: np.ndarray) -> None:
        """Add one frame's labelled pixels (flat scores and booleans, void already removed)."""
        hist = frame_histogram(scores, is_anomaly, self.strategy, self.num_bins)
        self._num_pos += int(hist.tp_rel.sum())
        self._num_neg += int(hist.fp_rel.sum())
        if self.strategy == "uniform":
            if self._fixed is None:
                self._fixed = FrameHistogram(hist.thresholds, hist.tp_rel.astype(np.int64), hist.fp_rel.astype(np.int64))
            else:
                self._fixed.tp_rel[:] += hist.tp_rel
                self._fixed.fp_rel[:] += hist.fp_rel
        else:
            self._frames.append(hist)

    def curve(self) -> Curve:
        """The merged curve; raises ``MetricInputError`` without anomaly or normal pixels."""
        if self.strategy == "uniform":
            parts = [self._fixed] if self._fixed is not None else []
        else:
            parts = self._frames
        thresholds = np.concatenate([p.thresholds for p in parts]) if parts else np.empty(0)
        tp_rel = np.concatenate([p.tp_rel for p in parts]) if parts else np.empty(0, np.int64)
        fp_rel = np.concatenate([p.fp_rel for p in parts]) if parts else np.empty(0, np.int64)
        order = np.argsort(-thresholds, kind="stable")
        thresholds = thresholds[order]
        tps = np.cumsum(tp_rel[order], dtype=np.int64)
        fps = np.cumsum(fp_rel[order], dtype=np.int64)
        # a threshold repeated across frames is complete only at its last entry
        last = np.r_[np.flatnonzero(thresholds[1:] != thresholds[:-1]), thresholds.size - 1] if thresholds.size else []
        return Curve(thresholds[last], tps[last], fps[last], self._num_pos, self._num_neg)


def smiyc_pixel_metrics(curve: Curve) -> dict:
    """AP (trapezoid), FPR95, AUROC and the best-F1 threshold of a binned curve; fractions in [0, 1].

    ``AP_step`` is the step-wise sum over the same bins, which the reference code switched to in later
    versions (commit 6bc8f37, "to match sklearn"); ``AP`` stays the
    trapezoid (docs/EVALUATION.md).
    """
    fpr95, fpr95_threshold = fpr_at_tpr(curve, 0.95)
    f1, f1_threshold = best_f1(curve)
    return {
        "AP": average_precision_trapezoid(curve),
        "AP_step": average_precision_step(curve.with_end_points()),
        "FPR95": fpr95,
        "FPR95_threshold": fpr95_threshold,
        "AUROC": auroc(curve),
        "best_F1": f1,
        "best_F1_threshold": f1_threshold,
    }
