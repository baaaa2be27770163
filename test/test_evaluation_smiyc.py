"""SegmentMeIfYouCan binned pixel metrics: a hand-computed case, streaming, exactness of small percentile bins."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mgcda_core.evaluation import MetricAccumulator
from mgcda_core.evaluation.smiyc import BinnedCurveAccumulator, smiyc_pixel_metrics

# anomaly scores 0.9, 0.8, 0.3; normal scores 0.7, 0.1, 0.1, 0.05
POS = np.array([0.9, 0.8, 0.3])
NEG = np.array([0.7, 0.1, 0.1, 0.05])


def test_uniform_bins_hand_computed() -> None:
    acc = BinnedCurveAccumulator("uniform", num_bins=4)  # edges 0, .25, .5, .75, 1
    acc.add(np.r_[POS, NEG], np.r_[np.ones(3, bool), np.zeros(4, bool)])
    metrics = smiyc_pixel_metrics(acc.curve())
    # thresholds .75/.5/.25/0 give (tp, fp) = (2,0) (2,1) (3,1) (3,4); with the empty start (0,0):
    # recall 0, 2/3, 2/3, 1, 1 and precision 1, 1, 2/3, 3/4, 3/7
    trapezoid = (1 + 1) / 2 * (2 / 3) + (2 / 3 + 3 / 4) / 2 * (1 / 3)
    assert metrics["AP"] == pytest.approx(trapezoid)  # = 65/72
    assert metrics["AP_step"] == pytest.approx(2 / 3 * 1 + 1 / 3 * 3 / 4)
    # TPR 0, 2/3, 2/3, 1, 1 against FPR 0, 0, 1/4, 1/4, 1
    assert metrics["AUROC"] == pytest.approx(1 / 4 * 2 / 3 + 3 / 4 * 1)
    assert metrics["FPR95"] == pytest.approx(1 / 4)
    assert metrics["FPR95_threshold"] == pytest.approx(0.25)
    # F1 = 2tp / (2tp + fp + fn): 4/5, 4/6, 6/7, 6/10 -> best 6/7 at the .25 edge
    assert metrics["best_F1"] == pytest.approx(6 / 7)
    assert metrics["best_F1_threshold"] == pytest.approx(0.25)


def test_streaming_equals_one_shot_uniform() -> None:
    rng = np.random.default_rng(3)
    frames = [(rng.random((16, 20)), rng.random((16, 20)) < 0.2) for _ in range(5)]
    streamed = BinnedCurveAccumulator("uniform")
    for score, positives in frames:
        streamed.add(score.ravel(), positives.ravel())
    one_shot = BinnedCurveAccumulator("uniform")
    one_shot.add(np.concatenate([s.ravel() for s, _ in frames]), np.concatenate([p.ravel() for _, p in frames]))
    assert smiyc_pixel_metrics(streamed.curve()) == pytest.approx(smiyc_pixel_metrics(one_shot.curve()))


def test_streaming_percentiles_matches_independent_merge() -> None:
    """Per-frame quantile edges merged by sorting thresholds, recomputed here from the definition."""
    rng = np.random.default_rng(5)
    acc = MetricAccumulator("smiyc", bins="percentiles")
    thresholds, tp_rel, fp_rel = [], [], []
    for index in range(4):
        label = (rng.random((40, 50)) < 0.3).astype(np.uint8)
        score = rng.random((40, 50)) ** (1 + label)
        acc.add(score, label, frame=str(index))
        pos, neg = score[label == 1], score[label == 0]
        edges = np.unique(np.r_[0.0, 1.0, np.quantile(pos, np.linspace(0, 1, 384)), np.quantile(neg, np.linspace(0, 1, 384))])
        thresholds.append(edges[:-1])
        tp_rel.append(np.histogram(pos, edges)[0])
        fp_rel.append(np.histogram(neg, edges)[0])
    order = np.argsort(np.concatenate(thresholds))[::-1]
    t = np.concatenate(thresholds)[order]
    tps = np.cumsum(np.concatenate(tp_rel)[order])
    fps = np.cumsum(np.concatenate(fp_rel)[order])
    keep = np.r_[t[1:] != t[:-1], True]
    tps, fps = np.r_[0, tps[keep]], np.r_[0, fps[keep]]
    precision = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1), 1.0)
    recall, fpr = tps / tps[-1], fps / fps[-1]
    result = acc.result()
    assert result["AP"] == pytest.approx(np.trapezoid(precision, recall), abs=1e-12)
    assert result["AUROC"] == pytest.approx(np.trapezoid(recall, fpr), abs=1e-12)
    assert result["FPR95"] == pytest.approx(fpr[np.argmax(recall >= 0.95)], abs=1e-12)
    assert result["num_images"] == 4 and result["num_pixels"] == 4 * 40 * 50
    assert result["bins"] == "percentiles" and result["num_bins"] == 768


def test_small_frames_make_percentile_bins_exact() -> None:
    """With 2^m + 1 pixels per class and frame (<= 384) every quantile edge is exactly a score: each distinct
    score gets its own bin and the binned curve is the exact one (step AP = sklearn's AP)."""
    rng = np.random.default_rng(11)
    acc = MetricAccumulator("smiyc", bins="percentiles")
    scores, labels = [], []
    for index in range(3):
        label = rng.permutation(np.r_[np.ones(129, np.uint8), np.zeros(257, np.uint8)])
        score = rng.random(label.size) + 0.4 * label
        acc.add(score.reshape(2, 193), label.reshape(2, 193), frame=str(index))
        scores.append(score)
        labels.append(label)
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    result = acc.result()
    assert result["AP_step"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert result["AUROC"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_uniform_bins_refuse_scores_outside_unit_interval() -> None:
    acc = MetricAccumulator("smiyc", bins="uniform")
    with pytest.raises(ValueError, match=r"cover \[0, 1\].*percentile"):
        acc.add(np.full((4, 4), 3.0), np.eye(4, dtype=np.uint8), frame="raw_logits")


def test_unknown_protocol_and_strategy() -> None:
    with pytest.raises(ValueError, match="fishyscapes"):
        MetricAccumulator("pebal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percentiles"):
        MetricAccumulator("smiyc", bins="log")  # type: ignore[arg-type]


def retained_bytes(acc: MetricAccumulator, score: np.ndarray, label: np.ndarray, frames: int) -> int:
    """Bytes still allocated after adding the same frame ``frames`` times (tracemalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(frames):
            acc.add(score, label)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("protocol,bins,max_bytes_per_frame", [
    ("smiyc", "uniform", 100),              # fixed 4096-bin counts: nothing grows
    ("smiyc", "percentiles", 40_000),       # <= 769 thresholds + 2 count vectors per frame
])
def test_binned_memory_does_not_grow_with_pixels(protocol: str, bins: str, max_bytes_per_frame: int) -> None:
    rng = np.random.default_rng(0)
    score = rng.random((256, 512))          # 1 MiB of float64 scores per frame
    label = (rng.random((256, 512)) < 0.1).astype(np.uint8)
    acc = MetricAccumulator(protocol, bins=bins)
    acc.add(score, label)
    retained = retained_bytes(acc, score, label, frames=10)
    assert retained <= 10 * max_bytes_per_frame + 20_000
    assert acc.result()["num_images"] == 11


def test_exact_protocol_keeps_the_labelled_scores() -> None:
    """The counterpart of the test above: Fishyscapes' exact mode retains every labelled pixel's score."""
    score = np.random.default_rng(0).random((256, 512)).astype(np.float32)
    label = np.zeros((256, 512), np.uint8)
    acc = MetricAccumulator("fishyscapes")
    retained = retained_bytes(acc, score, label, frames=3)
    assert retained >= 3 * score.size * 5 * 0.9  # float32 score + bool label per pixel
