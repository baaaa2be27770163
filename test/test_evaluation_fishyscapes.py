"""Fishyscapes (exact) metrics against sklearn and against hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from mgcda_core.evaluation import MetricAccumulator, MetricInputError
from mgcda_core.evaluation.fishyscapes import fishyscapes_metrics


def _sklearn_fpr95(labels: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= 0.95)])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["continuous", "ties", "constant"])
def test_matches_sklearn_on_random_data(seed: int, kind: str) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 5000))
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    labels[:2] = (True, False)
    if kind == "continuous":
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    elif kind == "ties":
        scores = rng.integers(0, int(rng.integers(2, 12)), n).astype(np.float64) + labels
    else:
        scores = np.full(n, 0.3)
    metrics, _ = fishyscapes_metrics(scores, labels)
    assert metrics["AP"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert metrics["AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["FPR95"] == pytest.approx(_sklearn_fpr95(labels, scores), abs=1e-12)


def test_hand_computed_case() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 0, 1, 1, 0, 0], dtype=bool)
    metrics, _ = fishyscapes_metrics(scores, labels)
    # precision at each positive's rank: 1/1, 2/3, 3/4
    assert metrics["AP"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # pairs (positive above negative): 0.9 beats 3, 0.7 beats 2, 0.6 beats 2 -> 7 of 9
    assert metrics["AUROC"] == pytest.approx(7 / 9)
    # TPR first reaches 0.95 at threshold 0.6 (3 of 3), where one of the three negatives is above
    assert metrics["FPR95"] == pytest.approx(1 / 3)
    assert metrics["FPR95_threshold"] == pytest.approx(0.6)


def test_fpr95_takes_first_threshold_reaching_095_not_the_closest() -> None:
    # 25 anomalies: 23 at 0.9 (TPR 0.92), 2 at 0.5 (TPR 1.0); 25 normals: 5 at 0.8, 20 at 0.2
    scores = np.r_[np.full(23, 0.9), np.full(2, 0.5), np.full(5, 0.8), np.full(20, 0.2)]
    labels = np.r_[np.ones(25, bool), np.zeros(25, bool)]
    metrics, _ = fishyscapes_metrics(scores, labels)
    # TPR 0.92 (FPR 0) is closer to 0.95 than 1.0, but only TPR >= 0.95 counts: threshold 0.5, FPR 5/25
    assert metrics["FPR95"] == pytest.approx(5 / 25)
    assert metrics["FPR95_threshold"] == pytest.approx(0.5)


def test_ties_form_one_threshold() -> None:
    scores = np.array([1.0, 1.0, 0.0, 0.0])
    labels = np.array([1, 0, 1, 0], dtype=bool)
    metrics, curve = fishyscapes_metrics(scores, labels)
    assert curve.thresholds.tolist() == [1.0, 0.0]
    assert curve.tps.tolist() == [1, 2] and curve.fps.tolist() == [1, 2]
    assert metrics["AP"] == pytest.approx(0.5)
    assert metrics["AUROC"] == pytest.approx(0.5)
    assert metrics["FPR95"] == pytest.approx(1.0)


@pytest.mark.parametrize("labels", [np.zeros(10, bool), np.ones(10, bool)])
def test_one_class_only_is_a_clear_error(labels: np.ndarray) -> None:
    with pytest.raises(MetricInputError, match="at least one of each"):
        fishyscapes_metrics(np.linspace(0, 1, 10), labels)


def test_accumulator_pools_frames_and_ignores_void() -> None:
    rng = np.random.default_rng(7)
    acc = MetricAccumulator("fishyscapes")
    pooled_scores, pooled_labels = [], []
    for index in range(3):
        label = rng.choice(np.array([0, 1, 255], np.uint8), size=(24, 32), p=[0.7, 0.2, 0.1])
        score = rng.random((24, 32)).astype(np.float32) + 0.5 * (label == 1)
        acc.add(score, label, frame=f"f{index}")
        pooled_scores.append(score[label != 255])
        pooled_labels.append(label[label != 255] == 1)
    scores, labels = np.concatenate(pooled_scores), np.concatenate(pooled_labels)
    result = acc.result()
    assert result["protocol"] == "fishyscapes"
    assert result["num_images"] == 3
    assert result["num_pixels"] == scores.size
    assert result["num_anomaly_pixels"] == int(labels.sum())
    assert result["AP"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert result["AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert result["FPR95"] == pytest.approx(_sklearn_fpr95(labels, scores), abs=1e-12)


def test_accumulator_without_anomaly_pixels_errors() -> None:
    acc = MetricAccumulator()
    acc.add(np.random.default_rng(0).random((8, 8)), np.zeros((8, 8), np.uint8), frame="empty")
    with pytest.raises(MetricInputError, match="0 anomaly"):
        acc.result()
