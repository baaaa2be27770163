"""Input validation, metrics.json, PR/ROC plots and the gallery."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mgcda_core.evaluation import MetricAccumulator, frame_metrics, write_metrics
from mgcda_core.evaluation.gallery import FrameSelector, GalleryFrame, write_gallery
from mgcda_core.evaluation.plots import write_curve_plots


def _frames(count: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        label = rng.choice(np.array([0, 1, 255], np.uint8), size=(32, 48), p=[0.75, 0.2, 0.05])
        frames.append(((rng.random((32, 48)) + 0.6 * (label == 1)).astype(np.float32), label))
    return frames


def test_label_values_outside_0_1_255_name_values_and_frame() -> None:
    label = np.zeros((4, 4), np.uint8)
    label[0, 0], label[1, 1] = 2, 7
    with pytest.raises(ValueError, match=r"frame cam_0042.*\[2, 7\].*0 \(normal\), 1 \(anomaly\) and 255"):
        MetricAccumulator().add(np.zeros((4, 4)), label, frame="cam_0042")


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(4, 4\)"):
        MetricAccumulator().add(np.zeros((4, 5)), np.zeros((4, 4), np.uint8), frame="x")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_refused(bad: float) -> None:
    score = np.zeros((4, 4))
    score[2, 2] = bad
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        MetricAccumulator("smiyc").add(score, np.eye(4, dtype=np.uint8), frame="x")


def test_write_metrics_json(tmp_path) -> None:
    acc = MetricAccumulator()
    for index, (score, label) in enumerate(_frames()):
        acc.add(score, label, frame=str(index))
    result = acc.result()
    path = write_metrics(tmp_path / "out", result, {"score": "max_logit", "model": {"segmentation": "espnetv2"}})
    data = json.loads(path.read_text())
    assert path.name == "metrics.json"
    for key in ("AP", "FPR95", "AUROC"):
        assert 0.0 <= data[key] <= 1.0 and data[key] == pytest.approx(result[key])
    assert data["protocol"] == "fishyscapes" and data["num_images"] == 3
    assert data["num_pixels"] == sum(int((label != 255).sum()) for _, label in _frames())
    assert data["score"] == "max_logit" and data["model"] == {"segmentation": "espnetv2"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]  # no temporary file left


def test_write_metrics_refuses_bad_results(tmp_path) -> None:
    base = {"AP": 0.5, "FPR95": 0.1, "AUROC": 0.9, "num_images": 1, "num_pixels": 10, "protocol": "fishyscapes"}
    with pytest.raises(ValueError, match="lacks.*AUROC"):
        write_metrics(tmp_path, {k: v for k, v in base.items() if k != "AUROC"})
    with pytest.raises(ValueError, match="AP = 50.0 is not a fraction"):
        write_metrics(tmp_path, {**base, "AP": 50.0})
    with pytest.raises(ValueError, match="overwrite"):
        write_metrics(tmp_path, base, {"AP": 0.9})
    # a -inf threshold (nothing in JSON can hold it) is written as null
    path = write_metrics(tmp_path, {**base, "FPR95_threshold": float("-inf")})
    assert json.loads(path.read_text())["FPR95_threshold"] is None


@pytest.mark.parametrize("protocol", ["fishyscapes", "smiyc"])
def test_curve_plots_are_pngs(tmp_path, protocol: str) -> None:
    acc = MetricAccumulator(protocol)
    for index, (score, label) in enumerate(_frames()):
        acc.add(score, label, frame=str(index))
    pr, roc = write_curve_plots(tmp_path, acc.curve(), acc.result(), title="test")
    for path in (pr, roc):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200


def test_frame_selector_keeps_best_and_worst() -> None:
    selector = FrameSelector(2)
    values = [0.4, 0.9, 0.1, 0.7, 0.3, 0.95, 0.05]
    blank = np.zeros((4, 4), np.uint8)
    for index, value in enumerate(values):
        selector.offer(GalleryFrame(f"f{index}", blank, blank, blank.astype(np.float32), value))
    assert [f.rank_value for f in selector.best()] == [0.95, 0.9]
    assert [f.rank_value for f in selector.worst()] == [0.05, 0.1]


def test_gallery_writes_grid_and_panels(tmp_path) -> None:
    (score, label), (score2, label2) = _frames(2)
    image = (np.random.default_rng(1).random((32, 48, 3)) * 255).astype(np.uint8)
    best = [GalleryFrame("good/frame 1", image, label, score, frame_metrics(score, label)["AP"])]
    worst = [GalleryFrame("bad", image, label2, -score2, frame_metrics(-score2, label2)["AP"])]
    assert best[0].rank_value > worst[0].rank_value
    paths = write_gallery(tmp_path, best, worst)
    assert paths[0].name == "gallery.png" and len(paths) == 1 + 2 * 4
    gt_panel = np.asarray(Image.open(tmp_path / "best_01_good_frame_1_ground_truth.png"))
    assert gt_panel.shape == (32, 48, 3)
    assert (gt_panel[label == 1] == (255, 40, 40)).all() and (gt_panel[label == 255] == 0).all()
    overlay = np.asarray(Image.open(tmp_path / "worst_01_bad_overlay.png"))
    assert overlay.shape == (32, 48, 3)


def test_frame_metrics_undefined_without_both_classes() -> None:
    assert frame_metrics(np.zeros((3, 3)), np.zeros((3, 3), np.uint8)) is None
    label = np.array([[0, 1], [255, 0]], np.uint8)
    assert frame_metrics(np.array([[0.1, 0.9], [0.5, 0.2]]), label) == {"AP": 1.0, "FPR95": 0.0}


@pytest.mark.parametrize("count,best,worst", [(1, [0], []), (3, [2, 1], [0]), (4, [3, 2], [0, 1])])
def test_frame_selector_never_shows_a_frame_twice(count: int, best: list[int], worst: list[int]) -> None:
    selector = FrameSelector(2)
    blank = np.zeros((4, 4), np.uint8)
    for value in range(count):
        selector.offer(GalleryFrame(f"f{value}", blank, blank, blank.astype(np.float32), float(value)))
    assert [f.rank_value for f in selector.best()] == best
    assert [f.rank_value for f in selector.worst()] == worst
