"""The node's steps after the network: score back to camera size, calibration, threshold, written in place.

Same values as ``Detector.__call__`` followed by ``anomaly_mask`` (tested against them), minus the temporaries: the
detector's bilinear resize writes straight into the caller's buffer (the outgoing ``anomaly_score`` payload when
someone listens), its calibration runs there in place, and the threshold writes the mono8 mask (0/255) straight into
the outgoing ``anomaly_mask`` payload.
"""

from __future__ import annotations

import cv2
import numpy as np

from mgcda_core.pipeline.detector import Detector


def run_network(detector: Detector, rgb: np.ndarray) -> np.ndarray:
    """The detector's network on an HxWx3 uint8 RGB frame: its 1 x 1 x h x w raw score at the network size."""
    return detector.runtime.run(detector.preprocess(rgb))


def score_into(detector: Detector, network_score: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Calibrated score in [0, 1] at ``out``'s size (HxW float32, C-contiguous), as ``Detector.__call__`` has it."""
    if out.ndim != 2:
        raise ValueError(f"out must be a C-contiguous HxW float32 array, got {out.dtype} {out.shape}")
    return detector.calibration.in_place(detector.postprocess(network_score, out.shape, out=out))


def threshold_into(score: np.ndarray, threshold: float, out: np.ndarray) -> np.ndarray:
    """mono8 mask of ``score >= threshold`` (255 anomaly, 0 normal) written into ``out`` (HxW uint8)."""
    if out.shape != score.shape or out.dtype != np.uint8:
        raise ValueError(f"out must be a uint8 array of shape {score.shape}, got {out.dtype} {out.shape}")
    # one OpenCV pass gives 0/255 directly: numpy needs a bool temporary and a multiply
    cv2.compare(score, float(threshold), cv2.CMP_GE, dst=out)  # type: ignore[call-overload]  # scalar: stubs lack it
    return out
