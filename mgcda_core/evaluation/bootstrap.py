"""Bootstrap intervals over frames for the pooled pixel metrics (AP, FPR95, AUROC).

With few frames (e.g. 20 RoadAnomaly frames) the frame-to-frame spread dominates the uncertainty of a pooled
metric, so frames — not pixels — are resampled with replacement (Efron & Tibshirani 1993, percentile interval).
Each frame is reduced once to two histograms (normal and anomaly pixels) over shared bin edges: the quantiles
of all valid scores, so every bin holds about the same number of pixels. A resample's pooled curve is then the
weighted sum of its frames' histograms, which makes 1,000 resamples of millions of pixels a few matrix products.
Within a bin all pixels share one threshold, so the binned AP/FPR95/AUROC differ from the exact ones by at most
the mass of one bin (``bins`` = 4096: a few 1e-4 on the full set; the exact metrics are reported beside).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgcda_core.errors import ConfigError, DataError

METRICS = ("AP", "FPR95", "AUROC")


def _edges(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], bins: int) -> np.ndarray:
    valid = np.concatenate([s[(lab == 0) | (lab == 1)].ravel() for s, lab in zip(scores, labels)])
    if valid.size == 0:
        raise DataError("no pixel is labelled 0 or 1: nothing to evaluate")
    edges = np.unique(np.quantile(valid.astype(np.float64), np.linspace(0, 1, bins + 1)[1:-1]))
    return edges


def frame_histograms(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     bins: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(F x B normal counts, F x B anomaly counts) per frame over shared quantile bins, highest scores first."""
    if len(scores) != len(labels) or not scores:
        raise DataError(f"need as many score maps as label maps (at least one), got {len(scores)} and {len(labels)}")
    edges = _edges(scores, labels, bins)
    normal = np.zeros((len(scores), edges.size + 1), dtype=np.float64)
    anomaly = np.zeros_like(normal)
    for row, (score, label) in enumerate(zip(scores, labels)):
        if score.shape != label.shape:
            raise DataError(f"frame {row}: score {score.shape} and label {label.shape} shapes differ")
        index = np.searchsorted(edges, score.ravel(), side="right")
        flat = label.ravel()
        normal[row] = np.bincount(index[flat == 0], minlength=edges.size + 1)
        anomaly[row] = np.bincount(index[flat == 1], minlength=edges.size + 1)
    return normal[:, ::-1], anomaly[:, ::-1]  # descending score: bin 0 holds the highest scores


def binned_metrics(normal: np.ndarray, anomaly: np.ndarray) -> dict[str, np.ndarray]:
    """AP (step-wise), FPR95 (first threshold with TPR ≥ 0.95) and AUROC from R x B pooled histograms in
    descending-score order; one value per row."""
    tp, fp = np.cumsum(anomaly, 1), np.cumsum(normal, 1)
    positives, negatives = tp[:, -1:], fp[:, -1:]
    if np.any(positives == 0) or np.any(negatives == 0):
        raise DataError("a resample holds no anomaly or no normal pixel; metrics are undefined")
    tpr, fpr = tp / positives, fp / negatives
    precision = tp / np.maximum(tp + fp, 1)
    recall_step = np.diff(np.concatenate([np.zeros_like(tpr[:, :1]), tpr], 1), axis=1)
    ap = (recall_step * precision).sum(1)
    first = np.argmax(tpr >= 0.95, axis=1)
    fpr95 = fpr[np.arange(len(fpr)), first]
    zeros = np.zeros_like(tpr[:, :1])
    tpr0, fpr0 = np.concatenate([zeros, tpr], 1), np.concatenate([zeros, fpr], 1)
    auroc = (np.diff(fpr0, axis=1) * (tpr0[:, 1:] + tpr0[:, :-1]) / 2).sum(1)
    return {"AP": ap, "FPR95": fpr95, "AUROC": auroc}


def bootstrap_intervals(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], resamples: int = 1000,
                        level: float = 0.95, bins: int = 4096, seed: int = 0) -> dict[str, dict[str, float]]:
    """Percentile bootstrap interval over frames of each metric: {metric: {"low", "high", "binned"}}, where
    "binned" is the metric of the full set on the same bins (for comparison with the exact value)."""
    if resamples < 1 or not 0 < level < 1:
        raise ConfigError(f"need resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    normal, anomaly = frame_histograms(scores, labels, bins)
    frames = len(scores)
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(frames, size=frames), minlength=frames) for _ in range(resamples)])
    weights = weights[(weights @ anomaly.sum(1) > 0) & (weights @ normal.sum(1) > 0)]  # defined resamples only
    sampled = binned_metrics(weights @ normal, weights @ anomaly)
    full = binned_metrics(normal.sum(0, keepdims=True), anomaly.sum(0, keepdims=True))
    tail = (1 - level) / 2 * 100
    return {name: {"low": float(np.percentile(sampled[name], tail)),
                   "high": float(np.percentile(sampled[name], 100 - tail)),
                   "binned": float(full[name][0]), "resamples": int(len(weights))} for name in METRICS}
