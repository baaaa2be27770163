"""VoidClass labels: void objects become 1, the rest of void (and ignored classes) 255, everything else 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data_cityscapes import _real_tree, _synthetic_tree

from mgcda_core.data.cityscapes import list_frames, read_frame
from mgcda_core.data.voidclass import VoidClass, VoidClassConfig, void_class_label
from mgcda_core.errors import ConfigError

ROAD, CAR, STATIC, DYNAMIC, EGO, PARKING, UNLABELED = 7, 26, 4, 5, 1, 9, 0


def _scene() -> np.ndarray:
    """A road with a dynamic object, a static bin, a parked area, a car and the ego-vehicle bonnet."""
    ids = np.full((20, 30), ROAD, np.uint8)
    ids[3:7, 4:9] = DYNAMIC
    ids[10:13, 20:22] = STATIC
    ids[0:3, 20:30] = PARKING
    ids[8:11, 10:16] = CAR
    ids[17:, :] = EGO
    ids[0, 0] = UNLABELED
    return ids


def test_known_void_object_becomes_anomaly_and_the_rest_of_void_is_ignored() -> None:
    expected = np.zeros((20, 30), np.uint8)
    expected[3:7, 4:9] = 1          # dynamic: Synboost's void object
    expected[10:13, 20:22] = 255    # static
    expected[0:3, 20:30] = 255      # parking: ignored in evaluation
    expected[17:, :] = 255          # ego vehicle
    expected[0, 0] = 255            # unlabeled
    np.testing.assert_array_equal(void_class_label(_scene()), expected)


def test_static_objects_can_be_counted_as_anomalies_too() -> None:
    label = void_class_label(_scene(), VoidClassConfig(("dynamic", "static")))
    assert (label[3:7, 4:9] == 1).all() and (label[10:13, 20:22] == 1).all()
    assert (label[17:, :] == 255).all() and (label[8:11, 10:16] == 0).all()


def test_non_void_class_is_refused_as_void_object() -> None:
    with pytest.raises(ValueError, match=r"\['car'\] are not in Cityscapes' void category"):
        VoidClassConfig(("car",))
    with pytest.raises(ConfigError, match="unknown Cityscapes class 'dinosaur'"):
        VoidClassConfig(("dinosaur",))


def test_dataset_reads_frames_and_labels_them(tmp_path: Path) -> None:
    dataset = VoidClass(_synthetic_tree(tmp_path, _scene()), "train")
    assert len(dataset) == 1
    frame = dataset[0]
    assert frame.name == "aachen_000000_000019" and frame.image.shape == (20, 30, 3)
    np.testing.assert_array_equal(frame.label, void_class_label(_scene()))


def test_real_sample_static_and_ego_vehicle_are_ignored(shared_data: Path, tmp_path: Path) -> None:
    frame = VoidClass(_real_tree(shared_data, tmp_path), "val")[0]
    ids = read_frame(list_frames(tmp_path, "val")[0]).label_ids
    # the frame has static objects and the ego vehicle but no 'dynamic' pixels: nothing anomalous
    assert (ids == STATIC).any() and (ids == EGO).any() and not (ids == DYNAMIC).any()
    ignored = np.isin(ids, [0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30])
    np.testing.assert_array_equal(frame.label, np.where(ignored, 255, 0).astype(np.uint8))
