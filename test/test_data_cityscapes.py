"""Cityscapes reader: the real gtFine sample, the id → trainId table, and clear errors on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mgcda_core.data.cityscapes import (
    label_id,
    label_ids_of_category,
    label_ids_to_train_ids,
    list_frames,
    read_frame,
    read_label_ids,
)
from mgcda_core.utils.images import read_label

SAMPLE = "frankfurt_000000_000294"


def _real_tree(shared_data: Path, tmp_path: Path) -> Path:
    """The real small gtFine sample copied into the official folder layout (split val, city frankfurt)."""
    source = shared_data / "cityscapes_samples" / f"{SAMPLE}_small"
    (tmp_path / "leftImg8bit" / "val" / "frankfurt").mkdir(parents=True)
    (tmp_path / "gtFine" / "val" / "frankfurt").mkdir(parents=True)
    shutil.copy(source / f"{SAMPLE}_leftImg8bit.png", tmp_path / "leftImg8bit" / "val" / "frankfurt")
    for kind in ("labelIds", "instanceIds"):
        shutil.copy(source / f"{SAMPLE}_gtFine_{kind}.png", tmp_path / "gtFine" / "val" / "frankfurt")
    return tmp_path


def _synthetic_tree(root: Path, label_ids: np.ndarray, image_size: tuple[int, int] | None = None) -> Path:
    """One frame 'aachen_000000_000019' with the given label ids; instance ids equal the label ids."""
    city_images, city_labels = root / "leftImg8bit" / "train" / "aachen", root / "gtFine" / "train" / "aachen"
    city_images.mkdir(parents=True)
    city_labels.mkdir(parents=True)
    height, width = image_size or label_ids.shape
    image = np.full((height, width, 3), 90, np.uint8)
    Image.fromarray(image).save(city_images / "aachen_000000_000019_leftImg8bit.png")
    Image.fromarray(label_ids).save(city_labels / "aachen_000000_000019_gtFine_labelIds.png")
    Image.fromarray(label_ids.astype(np.uint16)).save(city_labels / "aachen_000000_000019_gtFine_instanceIds.png")
    return root


def test_real_sample_reads_image_labels_and_instances(shared_data: Path, tmp_path: Path) -> None:
    frames = list_frames(_real_tree(shared_data, tmp_path), "val")
    assert [(frame.name, frame.city) for frame in frames] == [(SAMPLE, "frankfurt")]
    sample = read_frame(frames[0])
    assert sample.image.shape == (128, 256, 3) and sample.image.dtype == np.uint8
    assert sample.label_ids.shape == sample.instance_ids.shape == (128, 256)
    # instance ids: id * 1000 + k for things; this frame holds 4 persons (24) and 3 cars (26)
    things = np.unique(sample.instance_ids[sample.instance_ids >= 1000])
    assert things.tolist() == [24000, 24001, 24002, 24003, 26000, 26001, 26002]
    np.testing.assert_array_equal(sample.instance_ids[sample.instance_ids >= 1000] // 1000,
                                  sample.label_ids[sample.instance_ids >= 1000])
    # train ids against the sample's own labelTrainIds file (made by an independent downscale, hence not 100 %)
    folder = shared_data / "cityscapes_samples" / f"{SAMPLE}_small"
    reference = read_label(folder / f"{SAMPLE}_gtFine_labelTrainIds.png")
    assert np.mean(label_ids_to_train_ids(sample.label_ids) == reference) > 0.99


def test_train_ids_follow_the_official_table() -> None:
    # Cityscapes' published 19 training classes in train-id order, and the ids that are ignored (255).
    names = ["road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
             "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    ids = np.array([[label_id(name) for name in names]], dtype=np.uint8)
    np.testing.assert_array_equal(label_ids_to_train_ids(ids), np.arange(19, dtype=np.uint8)[None])
    ignored = np.array([[0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]], dtype=np.uint8)
    assert (label_ids_to_train_ids(ignored) == 255).all()
    assert label_ids_of_category("void") == (0, 1, 2, 3, 4, 5, 6)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit.*train"):
        list_frames(tmp_path, "train")
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"gtFine"):
        list_frames(tmp_path, "train")


def test_missing_label_file_is_named(tmp_path: Path) -> None:
    root = _synthetic_tree(tmp_path, np.full((8, 16), 7, np.uint8))
    (root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="instanceIds.png is missing"):
        list_frames(root, "train")


def test_colour_mask_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"x_gtFine_labelIds.png.*colour"):
        read_label_ids(path)


def test_train_ids_where_label_ids_are_expected_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x_gtFine_labelIds.png"
    Image.fromarray(np.array([[7, 255]], np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"\[255\] are not Cityscapes label ids"):
        read_label_ids(path)


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = _synthetic_tree(tmp_path, np.full((8, 16), 7, np.uint8), image_size=(10, 16))
    with pytest.raises(ValueError, match=r"labelIds.png: size 16x8 differs from its image .*leftImg8bit.png \(16x10\)"):
        read_frame(list_frames(root, "train")[0])
