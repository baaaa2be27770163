"""One streaming entry point for pixel metrics, used by ``mgcda_core.evaluate`` and ``mgcda_ros.replay``.

    acc = MetricAccumulator("fishyscapes")          # or "smiyc" (binned, bins="percentiles" | "uniform")
    for score, label in frames:
        acc.add(score, label, frame=name)            # HxW scores (higher = more anomalous), HxW {0, 1, 255}
    result = acc.result()                            # AP, FPR95, AUROC, num_images, num_pixels, protocol, ...
    curve = acc.curve()                              # for plots.write_curve_plots
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mgcda_core.errors import DataError
from mgcda_core.evaluation.curves import Curve
from mgcda_core.evaluation.fishyscapes import fishyscapes_metrics
from mgcda_core.evaluation.smiyc import BinnedCurveAccumulator, BinStrategy, smiyc_pixel_metrics
from mgcda_core.utils.finite import require_finite_score

Protocol = Literal["fishyscapes", "smiyc"]
PROTOCOLS = ("fishyscapes", "smiyc")
_ALLOWED_LABELS = (0, 1, 255)


def validate_pair(score: np.ndarray, label: np.ndarray, frame: str) -> None:
    """Refuse a score/label pair that is not HxW real scores with an HxW label map of {0, 1, 255}."""
    if not isinstance(score, np.ndarray) or not isinstance(label, np.ndarray):
        raise TypeError(f"frame {frame}: score and label must be numpy arrays, got "
                        f"{type(score).__name__} and {type(label).__name__}")
    if score.ndim != 2 or label.ndim != 2 or score.shape != label.shape:
        raise DataError(f"frame {frame}: score map shape {score.shape} and label map shape {label.shape} "
                        "must be the same HxW")
    if score.dtype == bool or not (np.issubdtype(score.dtype, np.floating) or np.issubdtype(score.dtype, np.integer)):
        raise ValueError(f"frame {frame}: score map must hold real numbers, got dtype {score.dtype}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"frame {frame}: label map must hold integer ids, got dtype {label.dtype}")
    require_finite_score(score, f"frame {frame}")
    values = np.unique(label) if label.dtype != np.uint8 else np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    unexpected = sorted(set(values.tolist()) - set(_ALLOWED_LABELS))
    if unexpected:
        raise DataError(f"frame {frame}: label map holds values {unexpected[:10]}; expected only 0 (normal), "
                        "1 (anomaly) and 255 (ignore)")


class MetricAccumulator:
    """Pixel-level anomaly metrics accumulated frame by frame.

    ``fishyscapes`` (default): exact; keeps the scores of labelled pixels (about 5 bytes per pixel).
    ``smiyc``: binned per frame (``bins`` = "percentiles", 768, or "uniform", 4096, which needs scores in
    [0, 1]); memory does not grow with the image size.
    """

    def __init__(self, protocol: Protocol = "fishyscapes", bins: BinStrategy = "percentiles",
                 num_bins: int | None = None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}: expected one of {PROTOCOLS}")
        self.protocol = protocol
        self.bins: BinStrategy | None = bins if protocol == "smiyc" else None
        self._binned = BinnedCurveAccumulator(bins, num_bins) if protocol == "smiyc" else None
        self._scores: list[np.ndarray] = []
        self._positives: list[np.ndarray] = []
        self.num_images = 0
        self.num_void_pixels = 0
        self._cache: tuple[dict, Curve] | None = None

    def add(self, score: np.ndarray, label: np.ndarray, frame: str | None = None) -> None:
        """Add one frame: ``score`` HxW (higher = more anomalous), ``label`` HxW uint8 in {0, 1, 255}."""
        validate_pair(score, label, frame if frame is not None else f"#{self.num_images}")
        labelled = label != 255
        scores = score[labelled]
        positives = label[labelled] == 1
        if self._binned is not None:
            self._binned.add(scores, positives)
        else:
            self._scores.append(scores.astype(np.float32) if scores.dtype == np.float16 else scores)
            self._positives.append(positives)
        self.num_images += 1
        self.num_void_pixels += int(labelled.size - np.count_nonzero(labelled))
        self._cache = None

    def _compute(self) -> tuple[dict, Curve]:
        if self._cache is None:
            if self._binned is not None:
                curve = self._binned.curve()
                metrics = smiyc_pixel_metrics(curve)
                metrics.update(bins=self.bins, num_bins=self._binned.num_bins)
            else:
                scores = np.concatenate(self._scores) if self._scores else np.empty(0, np.float32)
                positives = np.concatenate(self._positives) if self._positives else np.empty(0, bool)
                metrics, curve = fishyscapes_metrics(scores, positives)
            self._cache = (metrics, curve)
        return self._cache

    def result(self) -> dict:
        """Metrics (fractions in [0, 1]) and counts; raises ``MetricInputError`` without anomaly or normal pixels."""
        metrics, curve = self._compute()
        return {
            "protocol": self.protocol,
            **metrics,
            "num_images": self.num_images,
            "num_pixels": int(curve.num_pos + curve.num_neg),
            "num_anomaly_pixels": int(curve.num_pos),
            "num_normal_pixels": int(curve.num_neg),
            "num_void_pixels": self.num_void_pixels,
        }

    def curve(self) -> Curve:
        """The pooled curve (for PR/ROC plots)."""
        return self._compute()[1]


def frame_metrics(score: np.ndarray, label: np.ndarray) -> dict | None:
    """Exact AP and FPR95 of a single frame, or None when it lacks anomaly or normal pixels (for galleries)."""
    labelled = label != 255
    positives = label[labelled] == 1
    if positives.all() or not positives.any():
        return None
    metrics, _ = fishyscapes_metrics(score[labelled], positives)
    return {"AP": metrics["AP"], "FPR95": metrics["FPR95"]}

