"""Fishyscapes protocol: exact, sort-based pixel metrics over all labelled pixels pooled across images.

Facts matched (bdl-benchmark ``fishyscapes/benchmark.py``): pixels labelled 0 or 1 are pooled, scores are sorted
descending with a stable sort, tied scores form one threshold, AP is the step-wise sum (sklearn's
``average_precision_score``), FPR95 is the FPR at the first threshold whose TPR >= 0.95, AUROC is the trapezoid
rule with (0, 0) prepended.
"""

from __future__ import annotations

import numpy as np

from mgcda_core.evaluation.curves import Curve, auroc, average_precision_step, fpr_at_tpr, require_both_classes


def exact_curve(scores: np.ndarray, is_anomaly: np.ndarray) -> Curve:
    """Cumulative TP/FP counts at every distinct score, from the highest to the lowest.

    ``scores`` and ``is_anomaly`` are flat arrays of the labelled pixels only (void already removed).
    """
    scores = np.asarray(scores).ravel()
    is_anomaly = np.asarray(is_anomaly, dtype=bool).ravel()
    if scores.shape != is_anomaly.shape:
        raise ValueError(f"scores {scores.shape} and labels {is_anomaly.shape} differ in size")
    num_pos = int(np.count_nonzero(is_anomaly))
    require_both_classes(num_pos, scores.size - num_pos)
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    sorted_pos = is_anomaly[order]
    del order
    # last index of each run of equal scores: one threshold per distinct value (ties counted together)
    last_of_run = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), sorted_scores.size - 1]
    tps = np.cumsum(sorted_pos, dtype=np.int64)[last_of_run]
    fps = last_of_run + 1 - tps
    return Curve(sorted_scores[last_of_run].astype(np.float64), tps, fps, num_pos, scores.size - num_pos)


def fishyscapes_metrics(scores: np.ndarray, is_anomaly: np.ndarray) -> tuple[dict, Curve]:
    """AP, FPR95 and AUROC (fractions) of the pooled labelled pixels, plus the curve for plotting.

    Raises ``MetricInputError`` when the pixels hold no anomaly or no normal pixel.
    """
    curve = exact_curve(scores, is_anomaly)
    fpr95, fpr95_threshold = fpr_at_tpr(curve, 0.95)
    metrics = {
        "AP": average_precision_step(curve),
        "FPR95": fpr95,
        "FPR95_threshold": fpr95_threshold,
        "AUROC": auroc(curve),
    }
    return metrics, curve
