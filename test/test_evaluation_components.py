"""SegmentMeIfYouCan component metrics on constructed masks whose sIoU, PPV and F1 are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mgcda_core.evaluation import ComponentAccumulator
from mgcda_core.evaluation.components import SIOU_THRESHOLDS, frame_components


def _two_objects_one_merged_prediction() -> tuple[np.ndarray, np.ndarray]:
    """GT objects A (rows 2-5, cols 2-6) and B (rows 2-5, cols 10-14), 20 px each; a score map whose
    prediction P1 covers rows 2-5, cols 2-14 (52 px: A, B and 12 background px between) and P2 a pure false
    positive (rows 10-12, cols 20-24, 15 px)."""
    label = np.zeros((20, 40), np.uint8)
    label[2:6, 2:7] = 1
    label[2:6, 10:15] = 1
    score = np.zeros((20, 40), np.float32)
    score[2:6, 2:15] = 0.9
    score[10:13, 20:25] = 0.8
    return score, label


def test_siou_ppv_f1_by_hand() -> None:
    score, label = _two_objects_one_merged_prediction()
    acc = ComponentAccumulator(threshold=0.5, min_pred_size=1, min_gt_size=1)
    frame = acc.add(score, label)
    # sIoU(A): intersection 20 / (|A| 20 + P1's background 12); B's pixels are the adjustment, not union
    assert frame.siou_gt == pytest.approx([20 / 32, 20 / 32])
    # P1: intersection 40 (A and B) / (|P1| 52 + unpredicted GT 0); P2: 0
    assert sorted(frame.siou_pred) == pytest.approx([0.0, 40 / 52])
    assert sorted(frame.ppv_pred) == pytest.approx([0.0, 40 / 52])
    result = acc.result()
    assert result["sIoU"] == pytest.approx(20 / 32)
    assert result["PPV"] == pytest.approx((40 / 52 + 0) / 2)
    # per t: TP = 2 if t <= 0.625 else 0, FN = 2 - TP, FP = 1 (only P2 has PPV < t <= 0.75)
    f1 = [4 / (4 + 0 + 1) if t <= 20 / 32 else 0.0 for t in np.linspace(0.25, 0.75, 11)]
    assert result["mean_F1"] == pytest.approx(np.mean(f1))
    assert result["F1_25"] == pytest.approx(0.8) and result["F1_75"] == pytest.approx(0.0)
    assert result["num_gt_components"] == 2 and result["num_pred_components"] == 2


def test_partial_prediction_and_void() -> None:
    label = np.zeros((30, 30), np.uint8)
    label[5:15, 5:15] = 1          # object G, 100 px
    label[0:30, 25:30] = 255       # void strip
    score = np.zeros((30, 30))
    score[5:15, 10:20] = 1.0       # P: 100 px, 50 on G, 50 on background
    score[0:30, 26:30] = 1.0       # on void only: removed before components are formed
    frame = frame_components(score > 0.5, label, min_pred_size=1, min_gt_size=1)
    # sIoU(G) = 50 / (100 + 50 background of P); sIoU(P) = 50 / (100 + 50 unpredicted px of G)
    assert frame.siou_gt == pytest.approx([50 / 150])
    assert frame.siou_pred == pytest.approx([50 / 150])
    assert frame.ppv_pred == pytest.approx([0.5])


def test_eight_connectivity() -> None:
    label = np.zeros((10, 10), np.uint8)
    label[2:4, 2:4] = 1
    label[4:6, 4:6] = 1  # touches the first block only at a corner: one object with 8-connectivity
    frame = frame_components(label == 1, label, min_pred_size=1, min_gt_size=1)
    assert frame.siou_gt == pytest.approx([1.0]) and frame.ppv_pred == pytest.approx([1.0])


def test_anomaly_track_size_filters() -> None:
    label = np.zeros((120, 120), np.uint8)
    label[10:22, 10:22] = 1        # 144 px object: kept (>= 100)
    label[60:65, 60:65] = 1        # 25 px object: becomes void (< 100)
    score = np.zeros((120, 120))
    score[10:30, 10:30] = 1.0      # 400 px prediction over the kept object: dropped (< 500)
    score[50:75, 50:75] = 1.0      # 625 px prediction around the small object: kept; 600 px stay in the ROI
    acc = ComponentAccumulator(threshold=0.5, track="anomaly")
    frame = acc.add(score, label)
    assert frame.siou_gt == pytest.approx([0.0])          # the kept object lost its only prediction
    assert frame.ppv_pred == pytest.approx([0.0])         # the voided object's pixels no longer count
    assert frame.siou_pred == pytest.approx([0.0])
    assert (acc.min_pred_size, acc.min_gt_size) == (500, 100)
    result = acc.result()
    assert result["num_gt_components"] == 1 and result["num_pred_components"] == 1
    assert result["mean_F1"] == pytest.approx(0.0)


def test_obstacle_track_keeps_small_components() -> None:
    label = np.zeros((40, 40), np.uint8)
    label[5:9, 5:9] = 1            # 16 px obstacle: kept on the obstacle track (>= 10)
    score = np.zeros((40, 40))
    score[5:13, 5:12] = 1.0        # 56 px prediction (>= 50): 16 on the obstacle
    acc = ComponentAccumulator(threshold=0.5, track="obstacle")
    frame = acc.add(score, label)
    assert frame.siou_gt == pytest.approx([16 / (16 + 40)])
    assert frame.ppv_pred == pytest.approx([16 / 56])


def test_threshold_is_strict_and_thresholds_are_smiyc() -> None:
    assert np.allclose(SIOU_THRESHOLDS, np.arange(25, 80, 5) / 100)
    label = np.zeros((10, 10), np.uint8)
    label[2:5, 2:5] = 1
    score = (label == 1).astype(np.float64) * 0.5
    acc = ComponentAccumulator(threshold=0.5, min_pred_size=1, min_gt_size=1)
    assert acc.add(score, label).ppv_pred.size == 0  # score == threshold is not a prediction


def test_no_components_gives_undefined_not_nan() -> None:
    acc = ComponentAccumulator(threshold=0.5)
    acc.add(np.zeros((8, 8)), np.zeros((8, 8), np.uint8))
    result = acc.result()
    assert result["sIoU"] is None and result["PPV"] is None and result["mean_F1"] is None


def test_unknown_track() -> None:
    with pytest.raises(ValueError, match="obstacle"):
        ComponentAccumulator(threshold=0.5, track="lane")  # type: ignore[arg-type]
