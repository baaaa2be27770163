"""Bootstrap over frames: binned metrics agree with the exact Fishyscapes ones; intervals are sound."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mgcda_core.evaluation.bootstrap import binned_metrics, bootstrap_intervals, frame_histograms
from mgcda_core.evaluation.fishyscapes import fishyscapes_metrics


def _frames(count: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    scores, labels = [], []
    for _ in range(count):
        label = (rng.random((30, 40)) < rng.uniform(0.05, 0.3)).astype(np.uint8)
        label[rng.random((30, 40)) < 0.1] = 255  # ignored pixels
        scores.append((rng.normal(size=(30, 40)) + 1.5 * (label == 1)).astype(np.float32))
        labels.append(label)
    return scores, labels


def test_binned_metrics_match_exact_ones_within_a_bin() -> None:
    scores, labels = _frames(12)
    normal, anomaly = frame_histograms(scores, labels, bins=4096)
    binned = binned_metrics(normal.sum(0, keepdims=True), anomaly.sum(0, keepdims=True))
    valid = np.concatenate([(lab != 255).ravel() for lab in labels])
    flat_scores = np.concatenate([s.ravel() for s in scores])[valid]
    flat_labels = np.concatenate([lab.ravel() for lab in labels])[valid]
    exact, _ = fishyscapes_metrics(flat_scores, flat_labels == 1)
    # 4096 quantile bins over ~13,000 pixels: a bin holds ~3 pixels, so ties within bins move metrics by < 1e-3
    assert binned["AP"][0] == pytest.approx(average_precision_score(flat_labels, flat_scores), abs=1e-3)
    assert binned["AUROC"][0] == pytest.approx(roc_auc_score(flat_labels, flat_scores), abs=1e-3)
    assert binned["FPR95"][0] == pytest.approx(exact["FPR95"], abs=2e-3)


def test_intervals_bracket_the_full_set_and_are_reproducible() -> None:
    scores, labels = _frames(20, seed=1)
    first = bootstrap_intervals(scores, labels, resamples=300, seed=3)
    assert first == bootstrap_intervals(scores, labels, resamples=300, seed=3)
    for name in ("AP", "FPR95", "AUROC"):
        assert first[name]["low"] <= first[name]["binned"] <= first[name]["high"]
        assert first[name]["high"] - first[name]["low"] > 0  # frames differ, so resamples differ
        assert first[name]["resamples"] == 300
    # one frame repeated: every resample is that frame, the interval collapses onto its value
    single = bootstrap_intervals(scores[:1], labels[:1], resamples=50)
    assert single["AP"]["low"] == pytest.approx(single["AP"]["high"])


def test_bad_inputs_are_refused() -> None:
    scores, labels = _frames(2)
    with pytest.raises(ValueError, match="as many score maps as label maps"):
        bootstrap_intervals(scores, labels[:1])
    with pytest.raises(ValueError, match="no pixel is labelled 0 or 1"):
        bootstrap_intervals([scores[0]], [np.full_like(labels[0], 255)])
