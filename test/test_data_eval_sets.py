"""Evaluation-set readers: the real RoadAnomaly frames and generated Fishyscapes/SegmentMeIfYouCan layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgcda_core.data.eval_sets import EVAL_SETS, EvalLayoutError, open_eval_set


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(seed: int, shape=(12, 16)) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


def _label(seed: int, values, shape=(12, 16)) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(values, np.uint8), size=shape)


def test_road_anomaly_real_frames(shared_data: Path) -> None:
    root = shared_data / "road_anomaly_dev"
    dataset = open_eval_set("road_anomaly", root)
    names = json.loads((root / "frame_list.json").read_text())
    assert len(dataset) == len(names) == 20
    assert [f.name for f in dataset.frames] == [Path(n).stem for n in names]
    sample = dataset[3]
    raw = np.asarray(Image.open(root / "frames" / f"{sample.name}.labels" / "labels_semantic.png"))
    assert sample.image.shape == (720, 1280, 3) and sample.image.dtype == np.uint8
    assert sample.label.dtype == np.uint8 and set(np.unique(sample.label)) <= {0, 1}
    assert np.array_equal(sample.label == 1, raw == 2) and np.array_equal(sample.label == 0, raw == 0)
    assert np.array_equal(sample.image, np.asarray(Image.open(root / "frames" / names[3]).convert("RGB")))


def test_road_anomaly_fixture_undefined_label_value(tmp_path: Path) -> None:
    _write(tmp_path / "frames" / "a.jpg", _image(0))
    _write(tmp_path / "frames" / "a.labels" / "labels_semantic.png", _label(0, [0, 1, 2]))
    (tmp_path / "frame_list.json").write_text(json.dumps(["a.jpg"]))
    dataset = open_eval_set("road_anomaly", tmp_path)
    with pytest.raises(ValueError, match=r"labels_semantic.png: label values \[1\] are not defined.*\[0, 2\]"):
        dataset[0]


def test_road_anomaly_listed_but_missing(tmp_path: Path) -> None:
    _write(tmp_path / "frames" / "a.jpg", _image(0))
    (tmp_path / "frame_list.json").write_text(json.dumps(["a.jpg"]))
    with pytest.raises(EvalLayoutError, match=r"a.labels/labels_semantic.png is listed.*missing"):
        open_eval_set("road_anomaly", tmp_path)


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("name,split", [("fs_lost_and_found", "LostAndFound"), ("fs_static", "Static")])
def test_fishyscapes_layout(tmp_path: Path, name: str, split: str, nested: bool) -> None:
    root = tmp_path / split if nested else tmp_path
    for index in range(3):
        _write(root / "original" / f"frame{index}.png", _image(index))
        _write(root / "labels" / f"frame{index}.png", _label(index, [0, 1, 255]))
    dataset = open_eval_set(name, tmp_path)
    assert [f.name for f in dataset.frames] == ["frame0", "frame1", "frame2"]
    sample = dataset[1]
    assert np.array_equal(sample.label, _label(1, [0, 1, 255]))
    assert np.array_equal(sample.image, _image(1))


def test_fishyscapes_label_without_image(tmp_path: Path) -> None:
    _write(tmp_path / "labels" / "lonely.png", _label(0, [0, 1]))
    (tmp_path / "original").mkdir()
    with pytest.raises(EvalLayoutError, match=r"lonely.png has no image original/lonely"):
        open_eval_set("fs_static", tmp_path)


@pytest.mark.parametrize("name,suffix,track", [("smiyc_anomaly", "jpg", "anomaly"), ("smiyc_obstacle", "webp", "obstacle")])
def test_smiyc_layout(tmp_path: Path, name: str, suffix: str, track: str) -> None:
    for index in range(3):
        _write(tmp_path / "images" / f"validation{index:04d}.{suffix}", _image(index))
    _write(tmp_path / "images" / f"test0000.{suffix}", _image(9))  # released without labels
    for index in range(3):
        _write(tmp_path / "labels_masks" / f"validation{index:04d}_labels_semantic.png", _label(index, [0, 1, 255]))
    dataset = open_eval_set(name, tmp_path)
    assert dataset.track == track and dataset.num_unlabelled == 1
    assert [f.name for f in dataset.frames] == ["validation0000", "validation0001", "validation0002"]
    sample = dataset[2]
    assert np.array_equal(sample.label, _label(2, [0, 1, 255])) and sample.image.shape == (12, 16, 3)


def test_label_and_image_of_different_size(tmp_path: Path) -> None:
    _write(tmp_path / "images" / "a.jpg", _image(0))
    _write(tmp_path / "labels_masks" / "a_labels_semantic.png", _label(0, [0, 1], shape=(6, 8)))
    with pytest.raises(ValueError, match=r"label shape \(6, 8\) differs from image shape \(12, 16\)"):
        open_eval_set("smiyc_anomaly", tmp_path)[0]


@pytest.mark.parametrize("name,expected", [
    ("road_anomaly", "frame_list.json"),
    ("fs_lost_and_found", r"original/<name>.png and labels/<name>.png"),
    ("smiyc_obstacle", r"images/<fid>.jpg\|.webp and labels_masks/<fid>_labels_semantic.png"),
])
def test_wrong_layout_names_the_expected_one(tmp_path: Path, name: str, expected: str) -> None:
    _write(tmp_path / "leftImg8bit" / "x.png", _image(0))
    with pytest.raises(EvalLayoutError, match=rf"is not a .* root: expected {expected}"):
        open_eval_set(name, tmp_path)


def test_unknown_set_and_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="road_anomaly"):
        open_eval_set("lost_and_found_v2", tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        open_eval_set("road_anomaly", tmp_path / "absent")
    assert set(EVAL_SETS) == {"road_anomaly", "fs_lost_and_found", "fs_static", "smiyc_anomaly", "smiyc_obstacle",
                              "layout"}


def test_training_layout_folder_is_an_evaluation_set(tmp_path) -> None:
    from PIL import Image

    from mgcda_core.data.eval_sets import open_eval_set

    for folder in ("original", "labels"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.full((4, 6, 3), 7, dtype=np.uint8)).save(tmp_path / "original" / "a.png")
    Image.fromarray(np.array([[0, 1, 255, 0, 0, 1]] * 4, dtype=np.uint8)).save(tmp_path / "labels" / "a.png")
    dataset = open_eval_set("layout", tmp_path)
    assert len(dataset) == 1 and dataset.name == "layout"
    np.testing.assert_array_equal(dataset[0].label[0], [0, 1, 255, 0, 0, 1])
