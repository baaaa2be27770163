"""AnomalyMix (PEBAL's rule): the COCO filter, cropping, pasting, labels and seeded determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_cityscapes import _synthetic_tree
from test_data_coco import rle_of, write_coco

from mgcda_core.data.anomalymix import (
    AnomalyMix,
    AnomalyMixConfig,
    CutObject,
    anomaly_mix_label,
    cut_object,
    filter_coco_images,
    paste_object,
)
from mgcda_core.data.coco import CocoInstances

SQUARE = [[1.0, 1.0, 6.0, 1.0, 6.0, 6.0, 1.0, 6.0]]  # fills rows/cols 1..5
FILTERED = {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck", 10: "traffic light",
            13: "stop sign"}


def _filter_coco(root: Path) -> CocoInstances:
    images = [(100, 500, 600), (101, 480, 480), (102, 479, 600), (103, 600, 470), (104, 500, 500)]
    annotations = [(100, 18, SQUARE), (101, 33, SQUARE), (102, 18, SQUARE), (103, 18, SQUARE)]  # 104: none
    for offset, category in enumerate(FILTERED):  # a dog plus one excluded category each
        images.append((200 + offset, 500, 500))
        annotations += [(200 + offset, 18, SQUARE), (200 + offset, category, SQUARE)]
    path = write_coco(root, images, annotations)
    data = json.loads((path / "annotations" / "instances_train2017.json").read_text())
    data["categories"] += [{"id": cid, "name": name} for cid, name in FILTERED.items() if cid != 1]
    (path / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    return CocoInstances(path)


def test_filter_drops_listed_categories_small_and_empty_images(tmp_path: Path) -> None:
    coco = _filter_coco(tmp_path)
    assert filter_coco_images(coco) == [100, 101]  # 480 is allowed, 479 and 470 are not
    assert filter_coco_images(coco, AnomalyMixConfig(min_size=400)) == [100, 101, 102, 103]


def test_cut_object_crops_to_the_mask_bounding_box() -> None:
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    mask = np.zeros((10, 12), bool)
    mask[2, 3] = mask[6, 8] = mask[4, 5] = True
    obj = cut_object(image, mask)
    np.testing.assert_array_equal(obj.image, image[2:7, 3:9])
    np.testing.assert_array_equal(obj.mask, mask[2:7, 3:9])
    with pytest.raises(ValueError, match="empty object mask"):
        cut_object(image, np.zeros((10, 12), bool))


def test_pasted_pixels_become_one_and_nothing_else_changes() -> None:
    rng = np.random.default_rng(3)
    city = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    train_ids = np.zeros((16, 24), np.uint8)
    train_ids[:, :3] = 255                       # a void strip, partly under the object
    obj_mask = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1], [1, 1, 1]], bool)
    obj = CutObject(rng.integers(0, 256, (4, 3, 3), dtype=np.uint8), obj_mask, 5)
    out, pasted = paste_object(city, obj, top=6, left=1)
    label = anomaly_mix_label(train_ids, pasted)
    expected_pasted = np.zeros((16, 24), bool)
    expected_pasted[6:10, 1:4] = obj_mask
    np.testing.assert_array_equal(pasted, expected_pasted)
    np.testing.assert_array_equal(out[expected_pasted], obj.image[obj_mask])
    np.testing.assert_array_equal(out[~expected_pasted], city[~expected_pasted])
    expected_label = np.where(train_ids == 255, 255, 0).astype(np.uint8)
    expected_label[expected_pasted] = 1
    np.testing.assert_array_equal(label, expected_label)
    with pytest.raises(ValueError, match="does not fit"):
        paste_object(city, obj, top=13, left=0)


def _mix_inputs(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    ids = np.full((40, 60), 7, np.uint8)
    ids[:5] = 1                                   # ego-vehicle-like void strip at the top
    cityscapes = _synthetic_tree(tmp_path / "cs", ids)
    coco_pixels = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    second = np.zeros((20, 20), bool)
    second[10:13, 10:15] = True
    coco = write_coco(tmp_path / "coco", [(9, 20, 20)], [(9, 18, SQUARE), (9, 33, rle_of(second))],
                      pixels={9: coco_pixels})
    return cityscapes, coco, ids, coco_pixels


def test_dataset_pastes_the_union_mask_at_a_seeded_position(tmp_path: Path) -> None:
    cityscapes, coco, ids, coco_pixels = _mix_inputs(tmp_path)
    config = AnomalyMixConfig(min_size=10, seed=4)
    frame = AnomalyMix(cityscapes, coco, config=config)[0]
    union = np.zeros((20, 20), bool)
    union[1:6, 1:6] = union[10:13, 10:15] = True    # square polygon + RLE block
    crop, crop_pixels = union[1:13, 1:15], coco_pixels[1:13, 1:15]
    rows, cols = np.nonzero(frame.label == 1)
    top, left = rows.min(), cols.min()
    assert frame.label.shape == (40, 60) and rows.size == union.sum()
    np.testing.assert_array_equal(frame.label[top:top + 12, left:left + 14] == 1, crop)
    np.testing.assert_array_equal(frame.image[top:top + 12, left:left + 14][crop], crop_pixels[crop])
    untouched = frame.label != 1
    assert (frame.image[untouched] == 90).all()          # the Cityscapes image elsewhere is unchanged
    assert (frame.label[untouched] == np.where(ids == 1, 255, 0)[untouched]).all()
    again = AnomalyMix(cityscapes, coco, config=config)[0]
    np.testing.assert_array_equal(again.label, frame.label)
    positions = {tuple(np.argwhere(AnomalyMix(cityscapes, coco, config=AnomalyMixConfig(min_size=10, seed=s))[0].label
                                   == 1)[0]) for s in range(6)}
    assert len(positions) > 1  # the seed moves the object


def test_no_image_passing_the_filter_is_an_error(tmp_path: Path) -> None:
    cityscapes, coco, _, _ = _mix_inputs(tmp_path)
    with pytest.raises(ValueError, match=r"no image passes the AnomalyMix filter .*sides >= 480"):
        AnomalyMix(cityscapes, coco)
