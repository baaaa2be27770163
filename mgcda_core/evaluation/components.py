"""SegmentMeIfYouCan component-level metrics: sIoU, PPV and mean F1 over sIoU thresholds.

Facts matched (SegmentMeIfYouCan/road-anomaly-benchmark ``metrics/instance_segmentation.py``):
- prediction = score > threshold (the best pixel-F1 threshold of the binned curve), void pixels removed;
- components with 8-connectivity on the prediction and on the ground truth (label 1);
- predicted components smaller than ``min_pred_size`` pixels are dropped (500 anomaly track, 50 obstacle);
  ground-truth components smaller than ``min_gt_size`` (100 / 10) become void, and everything is then
  restricted to the non-void pixels;
- sIoU of a ground-truth component g with the set K of predicted components touching it:
  |g ∩ K| / |(g ∪ K) \\ A| where the adjustment A is the other ground-truth components (so one prediction
  covering two objects is not penalised for either); symmetric for a predicted component;
- PPV of a predicted component = |p ∩ ground truth| / |p|;
- per sIoU threshold t in linspace(0.25, 0.75, 11): TP = #GT components with sIoU >= t, FN = the others,
  FP = #predicted components with PPV < t; F1(t) = 2TP / (2TP + FN + FP) over the pooled counts; mean F1 is
  the mean over t. sIoU and PPV are averaged over all components of the data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

Track = Literal["anomaly", "obstacle"]
#: (min predicted component size, min ground-truth component size) in pixels per SegmentMeIfYouCan track
TRACK_SIZE_FILTERS: dict[str, tuple[int, int]] = {"anomaly": (500, 100), "obstacle": (50, 10)}
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class FrameComponents:
    """Per-component values of one frame."""

    siou_gt: np.ndarray    # one per ground-truth component
    siou_pred: np.ndarray  # one per predicted component
    ppv_pred: np.ndarray   # one per predicted component


def _compact_labels(components: np.ndarray, count: int, keep: np.ndarray) -> np.ndarray:
    """Relabel components so the kept ones are 1..n and the rest 0 (``keep`` indexed by old id, id 0 ignored)."""
    remap = np.zeros(count + 1, dtype=np.int64)
    keep = keep.copy()
    keep[0] = False
    remap[keep] = np.arange(1, int(keep.sum()) + 1)
    return remap[components]


def frame_components(prediction: np.ndarray, label: np.ndarray, min_pred_size: int, min_gt_size: int) -> FrameComponents:
    """sIoU and PPV of every component of one frame.

    ``prediction``: HxW bool anomaly mask; ``label``: HxW uint8 in {0, 1, 255}.
    """
    valid = label != 255
    pred_cc, n_pred = ndimage.label(prediction & valid, structure=_EIGHT_CONNECTED)
    gt_cc, n_gt = ndimage.label(label == 1, structure=_EIGHT_CONNECTED)
    pred_cc = _compact_labels(pred_cc, n_pred, np.bincount(pred_cc.ravel(), minlength=n_pred + 1) >= min_pred_size)
    gt_sizes = np.bincount(gt_cc.ravel(), minlength=n_gt + 1)
    small_gt = gt_sizes < min_gt_size
    small_gt[0] = False
    roi = valid & ~small_gt[gt_cc]
    gt_cc = _compact_labels(gt_cc, n_gt, ~small_gt)

    g = gt_cc[roi]
    p = pred_cc[roi]
    num_g, num_p = int(g.max(initial=0)), int(p.max(initial=0))
    # contingency table of (ground-truth component, predicted component) pixel counts, id 0 = background
    table = np.bincount(g * (num_p + 1) + p, minlength=(num_g + 1) * (num_p + 1)).reshape(num_g + 1, num_p + 1)
    table = table.astype(np.float64)
    gt_size = table[1:, :].sum(axis=1)
    pred_size = table[:, 1:].sum(axis=0)
    overlap = table[1:, 1:]
    touches = overlap > 0

    # GT g: intersection with its touching predictions K; the adjusted union |g| + |K on background| follows
    # from |K| + |g| - intersection - |K on other GT components|.
    inter_gt = overlap.sum(axis=1)
    union_gt = gt_size + touches @ table[0, 1:]
    # predicted p: symmetric, with the touching GT components' pixels left unpredicted
    inter_pred = overlap.sum(axis=0)
    union_pred = pred_size + touches.T @ table[1:, 0]
    present = pred_size > 0  # a prediction lying entirely on voided pixels is not a component of the ROI
    return FrameComponents(
        siou_gt=inter_gt / union_gt,
        siou_pred=(inter_pred / np.where(present, union_pred, 1.0))[present],
        ppv_pred=(inter_pred / np.where(present, pred_size, 1.0))[present],
    )


class ComponentAccumulator:
    """Streams frames into pooled component counts (memory independent of the number of frames).

    ``threshold``: prediction = score > threshold; size filters default to the ``track``'s.
    """

    def __init__(self, threshold: float, track: Track = "anomaly", min_pred_size: int | None = None,
                 min_gt_size: int | None = None) -> None:
        if track not in TRACK_SIZE_FILTERS:
            raise ValueError(f"unknown SegmentMeIfYouCan track {track!r}: expected one of {sorted(TRACK_SIZE_FILTERS)}")
        default_pred, default_gt = TRACK_SIZE_FILTERS[track]
        self.threshold = float(threshold)
        self.track = track
        self.min_pred_size = default_pred if min_pred_size is None else int(min_pred_size)
        self.min_gt_size = default_gt if min_gt_size is None else int(min_gt_size)
        self._tp = np.zeros(SIOU_THRESHOLDS.size, np.int64)
        self._fn = np.zeros(SIOU_THRESHOLDS.size, np.int64)
        self._fp = np.zeros(SIOU_THRESHOLDS.size, np.int64)
        self._sums = {"siou_gt": 0.0, "siou_pred": 0.0, "ppv": 0.0}
        self._counts = {"gt": 0, "pred": 0}

    def add(self, score: np.ndarray, label: np.ndarray) -> FrameComponents:
        """Add one frame (HxW score, HxW label in {0, 1, 255}); returns its component values."""
        frame = frame_components(score > self.threshold, label, self.min_pred_size, self.min_gt_size)
        self._tp += (frame.siou_gt[None, :] >= SIOU_THRESHOLDS[:, None]).sum(axis=1)
        self._fn += (frame.siou_gt[None, :] < SIOU_THRESHOLDS[:, None]).sum(axis=1)
        self._fp += (frame.ppv_pred[None, :] < SIOU_THRESHOLDS[:, None]).sum(axis=1)
        self._sums["siou_gt"] += float(frame.siou_gt.sum())
        self._sums["siou_pred"] += float(frame.siou_pred.sum())
        self._sums["ppv"] += float(frame.ppv_pred.sum())
        self._counts["gt"] += frame.siou_gt.size
        self._counts["pred"] += frame.ppv_pred.size
        return frame

    def result(self) -> dict:
        """sIoU (GT-averaged), PPV (prediction-averaged), mean F1 and F1 at 0.25/0.5/0.75; None where undefined."""
        denominator = 2 * self._tp + self._fn + self._fp
        f1 = np.where(denominator > 0, 2 * self._tp / np.maximum(denominator, 1), np.nan)
        n_gt, n_pred = self._counts["gt"], self._counts["pred"]

        def defined(value: float) -> float | None:
            return None if not np.isfinite(value) else float(value)

        out = {
            "sIoU": defined(self._sums["siou_gt"] / n_gt) if n_gt else None,
            "sIoU_pred": defined(self._sums["siou_pred"] / n_pred) if n_pred else None,
            "PPV": defined(self._sums["ppv"] / n_pred) if n_pred else None,
            "mean_F1": defined(float(np.mean(f1))) if np.all(np.isfinite(f1)) else None,
            "num_gt_components": n_gt,
            "num_pred_components": n_pred,
            "threshold": self.threshold,
            "track": self.track,
            "min_pred_size": self.min_pred_size,
            "min_gt_size": self.min_gt_size,
        }
        for t, value in zip(SIOU_THRESHOLDS, f1):
            if round(t * 100) in (25, 50, 75):
                out[f"F1_{round(t * 100)}"] = defined(value)
        return out
