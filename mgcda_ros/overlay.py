"""Anomaly overlay: the camera image with pixels at or above the threshold tinted."""

from __future__ import annotations

import numpy as np

#: tint colour (RGB): saturated orange-red, readable on grey roads and green verges.
TINT_RGB = (255, 40, 0)


def anomaly_mask(score: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose calibrated score is at or above ``threshold`` (HxW bool)."""
    return score >= threshold


def make_overlay(rgb: np.ndarray, mask: np.ndarray, alpha: float, tint: tuple[int, int, int] = TINT_RGB) -> np.ndarray:
    """Blend ``tint`` into the anomalous pixels: out = (1 - alpha)·rgb + alpha·tint there; returns HxWx3 uint8 BGR.

    BGR because that is what the node publishes (``bgr8``, the encoding every viewer shows correctly).
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} is outside [0, 1]")
    bgr = rgb[:, :, ::-1].copy()
    tint_bgr = np.asarray(tint[::-1], dtype=np.float32)
    blended = (1.0 - alpha) * bgr[mask].astype(np.float32) + alpha * tint_bgr
    bgr[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return bgr
