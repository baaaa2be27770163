"""COCO instance reader: union masks from polygons and RLE, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from mgcda_core.data.coco import CocoInstances

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 33, "name": "suitcase"}]


def rle_of(mask: np.ndarray) -> dict:
    """Compressed COCO RLE of a bool mask, JSON-ready."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode("ascii")}


def write_coco(root: Path, images: list[tuple[int, int, int]], annotations: list[tuple[int, int, object]],
               pixels: dict[int, np.ndarray] | None = None, split: str = "train2017") -> Path:
    """A COCO root: images (id, height, width) written as PNG (``pixels`` or grey), annotations
    (image id, category id, segmentation)."""
    (root / "annotations").mkdir(parents=True)
    (root / split).mkdir()
    infos = []
    for image_id, height, width in images:
        array = pixels[image_id] if pixels and image_id in pixels else np.full((height, width, 3), 128, np.uint8)
        Image.fromarray(array).save(root / split / f"{image_id:012d}.png")
        infos.append({"id": image_id, "file_name": f"{image_id:012d}.png", "height": height, "width": width})
    anns = []
    for number, (image_id, category, segmentation) in enumerate(annotations, start=1):
        height, width = next((h, w) for i, h, w in images if i == image_id)
        rle = mask_utils.frPyObjects(segmentation, height, width) if isinstance(segmentation, list) else segmentation
        rle = mask_utils.merge(rle) if isinstance(rle, list) else rle
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        anns.append({"id": number, "image_id": image_id, "category_id": category, "segmentation": segmentation,
                     "bbox": [x, y, w, h], "area": float(mask_utils.area(rle)),
                     "iscrowd": int(isinstance(segmentation, dict))})
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": infos, "annotations": anns, "categories": CATEGORIES}))
    return root


def test_object_mask_is_the_union_of_polygon_and_rle(tmp_path: Path) -> None:
    blob = np.zeros((30, 40), bool)
    blob[5:9, 25:35] = True            # RLE part
    blob[15, 2] = True                 # a lone pixel, far from the polygon
    polygon = [[10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]]  # pycocotools fills rows/cols 10..19
    coco = CocoInstances(write_coco(tmp_path, [(7, 30, 40)], [(7, 18, polygon), (7, 33, rle_of(blob))]))
    expected = blob.copy()
    expected[10:20, 10:20] = True
    np.testing.assert_array_equal(coco.object_mask(7), expected)
    assert coco.category_names == {"person": 1, "dog": 18, "suitcase": 33}
    assert coco.read_image(7).shape == (30, 40, 3)


def test_missing_annotation_file_and_image_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"annotations/instances_train2017.json"):
        CocoInstances(tmp_path)
    root = write_coco(tmp_path / "c", [(1, 8, 8)], [(1, 18, [[1, 1, 5, 1, 5, 5]])])
    with pytest.raises(FileNotFoundError, match=r"val2017"):
        (root / "annotations" / "instances_val2017.json").write_text("{}")
        CocoInstances(root, "val2017")


def test_file_without_instance_annotations_is_refused(tmp_path: Path) -> None:
    root = write_coco(tmp_path, [(1, 8, 8)], [(1, 18, [[1, 1, 5, 1, 5, 5]])])
    path = root / "annotations" / "instances_train2017.json"
    captions = {"images": [{"id": 1, "file_name": "000000000001.png", "height": 8, "width": 8}],
                "annotations": [{"id": 1, "image_id": 1, "caption": "a dog"}], "categories": CATEGORIES}
    path.write_text(json.dumps(captions))
    with pytest.raises(ValueError, match=r"instances_train2017.json: 1 annotations .* no instance segmentation"):
        CocoInstances(root)
    path.write_text(json.dumps({"images": [], "categories": CATEGORIES}))
    with pytest.raises(ValueError, match=r"\['annotations'\] missing"):
        CocoInstances(root)
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    with pytest.raises(ValueError, match="no annotations"):
        CocoInstances(root)


def test_image_of_another_size_than_annotated_is_refused(tmp_path: Path) -> None:
    root = write_coco(tmp_path, [(3, 8, 8)], [(3, 18, [[1, 1, 5, 1, 5, 5]])],
                      pixels={3: np.zeros((9, 8, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"000000000003.png: size 8x9 differs .* 8x8"):
        CocoInstances(root).read_image(3)
