"""COCO instance reader (``<root>/annotations/instances_<split>.json`` + ``<root>/<split>/<file_name>``) on pycocotools.

Masks come from ``COCO.annToMask``, so polygons, uncompressed RLE and compressed RLE are all decoded by pycocotools.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from mgcda_core.errors import DataError, MissingInputError
from mgcda_core.utils.images import read_rgb


class CocoInstances:
    """One COCO instances split: category look-up, per-image annotations, object masks and images."""

    def __init__(self, root: str | os.PathLike[str], split: str = "train2017") -> None:
        self.root = Path(root)
        self.split = split
        self.annotation_file = self.root / "annotations" / f"instances_{split}.json"
        self.image_dir = self.root / split
        if not self.annotation_file.is_file():
            raise MissingInputError(f"COCO annotation file not found: {self.annotation_file} (expected "
                                    f"<root>/annotations/instances_{split}.json)")
        if not self.image_dir.is_dir():
            raise MissingInputError(f"COCO image folder not found: {self.image_dir} (expected <root>/{split}/)")
        with open(self.annotation_file, encoding="utf-8") as handle:
            dataset = json.load(handle)
        _check_instances(dataset, self.annotation_file)
        self.coco = COCO()
        self.coco.dataset = dataset
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            self.coco.createIndex()

    @property
    def image_ids(self) -> list[int]:
        """All image ids, sorted."""
        return sorted(self.coco.getImgIds())

    @property
    def category_names(self) -> dict[str, int]:
        """Category name → id, as this file defines them."""
        return {cat["name"]: cat["id"] for cat in self.coco.loadCats(self.coco.getCatIds())}

    def image_info(self, image_id: int) -> dict:
        """The ``images`` entry (file_name, height, width, ...)."""
        return self.coco.imgs[image_id]

    def annotations(self, image_id: int) -> list[dict]:
        """All annotations of an image, crowd ones included."""
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id], iscrowd=None))

    def object_mask(self, image_id: int) -> np.ndarray:
        """HxW bool union of every annotation's mask of the image (PEBAL's max over annotations)."""
        info = self.image_info(image_id)
        mask = np.zeros((info["height"], info["width"]), dtype=bool)
        for annotation in self.annotations(image_id):
            mask |= self.coco.annToMask(annotation).astype(bool)
        return mask

    def read_image(self, image_id: int) -> np.ndarray:
        """HxWx3 uint8 RGB; its size must match the annotation file's height and width."""
        info = self.image_info(image_id)
        path = self.image_dir / info["file_name"]
        image = read_rgb(path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataError(f"{path}: size {image.shape[1]}x{image.shape[0]} differs from {self.annotation_file}'s "
                             f"{info['width']}x{info['height']} for image id {image_id}")
        return image


def _check_instances(dataset: object, path: Path) -> None:
    """Refuse files that are not COCO instance annotations (captions, keypoints-less lists, empty files)."""
    expected = "expected a COCO instances file with 'images', 'categories' and 'annotations' carrying 'segmentation'"
    if not isinstance(dataset, dict):
        raise DataError(f"{path}: top level is a {type(dataset).__name__}, {expected}")
    missing = [key for key in ("images", "categories", "annotations") if key not in dataset]
    if missing:
        raise DataError(f"{path}: keys {missing} missing; {expected}")
    annotations = dataset["annotations"]
    if not annotations:
        raise DataError(f"{path}: no annotations; {expected}")
    without = [ann.get("id") for ann in annotations if "segmentation" not in ann or "category_id" not in ann]
    if without:
        raise DataError(f"{path}: {len(without)} annotations (ids {without[:5]}) have no instance segmentation; "
                         f"{expected}")
