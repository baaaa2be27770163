"""AnomalyMix domain (A): COCO objects pasted into Cityscapes frames, PEBAL's rule.

- COCO images are kept when no annotation is a person, bicycle, car, motorcycle, bus, truck, traffic light or stop
  sign, they have at least one annotation, and both sides are >= ``min_size`` (480 in PEBAL).
- The object mask is the union (max) over all the image's annotations; image and mask are cropped to the mask's
  bounding box; only mask pixels are pasted, unscaled, with the crop's top-left corner drawn uniformly among the
  positions where the crop fits inside the Cityscapes frame (at the frame's own resolution).
- Label: pasted pixels 1, Cityscapes pixels with train id 255 (void / ignored in evaluation) 255, the rest 0.

Each frame ``i`` (in name order) uses ``numpy.random.default_rng([seed, i])``, so any frame is reproducible alone
(resumed runs give the same bytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mgcda_core.constants import IGNORE_INDEX
from mgcda_core.data.cityscapes import LabelledFrame, label_ids_to_train_ids, list_frames, read_frame
from mgcda_core.data.coco import CocoInstances
from mgcda_core.errors import DataError

# PEBAL's excluded COCO classes: they exist in Cityscapes' training classes and would not be anomalies.
EXCLUDED_COCO_CATEGORIES = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign")


@dataclass(frozen=True)
class AnomalyMixConfig:
    excluded_categories: tuple[str, ...] = EXCLUDED_COCO_CATEGORIES
    min_size: int = 480  # PEBAL; smaller for the procedural mini COCO
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_size < 1:
            raise DataError(f"min_size must be >= 1 pixel, got {self.min_size}")


class CutObject(NamedTuple):
    image: np.ndarray  # hxwx3 uint8, cropped to the mask's bounding box
    mask: np.ndarray   # hxw bool
    image_id: int


def filter_coco_images(coco: CocoInstances, config: AnomalyMixConfig = AnomalyMixConfig()) -> list[int]:
    """Ids of images with annotations, none of an excluded category, and height and width >= ``min_size``.

    An excluded name the file does not define cannot occur in it, so it excludes nothing.
    """
    defined = coco.category_names
    excluded = {defined[name] for name in config.excluded_categories if name in defined}
    kept = []
    for image_id in coco.image_ids:
        info = coco.image_info(image_id)
        if info["height"] < config.min_size or info["width"] < config.min_size:
            continue
        categories = {annotation["category_id"] for annotation in coco.annotations(image_id)}
        if categories and not categories & excluded:
            kept.append(image_id)
    return kept


def cut_object(image: np.ndarray, mask: np.ndarray, image_id: int = -1) -> CutObject:
    """Crop image and mask to the bounding box of the mask's true pixels."""
    if image.shape[:2] != mask.shape:
        raise DataError(f"object image {image.shape[:2]} and mask {mask.shape} sizes differ")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise DataError(f"COCO image {image_id}: empty object mask, nothing to paste")
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return CutObject(image[box], mask[box], image_id)


def paste_object(image: np.ndarray, obj: CutObject, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    """Copy of ``image`` with the object's mask pixels at (top, left), and the HxW bool mask of pasted pixels."""
    height, width = obj.mask.shape
    if top < 0 or left < 0 or top + height > image.shape[0] or left + width > image.shape[1]:
        raise DataError(f"object {width}x{height} at (top={top}, left={left}) does not fit in a "
                         f"{image.shape[1]}x{image.shape[0]} image")
    pasted = np.zeros(image.shape[:2], dtype=bool)
    pasted[top:top + height, left:left + width] = obj.mask
    out = image.copy()
    out[pasted] = obj.image[obj.mask]
    return out, pasted


def anomaly_mix_label(train_ids: np.ndarray, pasted: np.ndarray) -> np.ndarray:
    """HxW uint8: 1 where pasted, else 255 where the Cityscapes train id is 255, else 0 (PEBAL's rule)."""
    label = np.where(train_ids == IGNORE_INDEX, IGNORE_INDEX, 0).astype(np.uint8)
    label[pasted] = 1
    return label


def _object_extents(coco: CocoInstances, image_ids: list[int]) -> np.ndarray:
    """N x 2 (height, width) upper bounds of each image's object crop, from the union of annotation boxes."""
    extents = np.zeros((len(image_ids), 2), dtype=np.int64)
    for row, image_id in enumerate(image_ids):
        boxes = np.array([annotation["bbox"] for annotation in coco.annotations(image_id)], dtype=np.float64)
        x0, y0 = np.floor(boxes[:, 0].min()), np.floor(boxes[:, 1].min())
        x1, y1 = np.ceil((boxes[:, 0] + boxes[:, 2]).max()), np.ceil((boxes[:, 1] + boxes[:, 3]).max())
        extents[row] = (y1 - y0, x1 - x0)
    return extents


class AnomalyMix:
    """Pastes one filtered COCO object into each Cityscapes frame of a split."""

    def __init__(self, cityscapes_root: str | os.PathLike[str], coco_root: str | os.PathLike[str],
                 split: str = "train", coco_split: str = "train2017",
                 config: AnomalyMixConfig = AnomalyMixConfig()) -> None:
        self.config = config
        self.frames = list_frames(cityscapes_root, split)
        self.coco = CocoInstances(coco_root, coco_split)
        self.pool = filter_coco_images(self.coco, config)
        if not self.pool:
            raise DataError(f"{self.coco.annotation_file}: no image passes the AnomalyMix filter (no "
                             f"{', '.join(config.excluded_categories)}; sides >= {config.min_size} px)")
        self.extents = _object_extents(self.coco, self.pool)

    def __len__(self) -> int:
        return len(self.frames)

    def cut(self, image_id: int) -> CutObject:
        """The union object mask of a COCO image, cropped."""
        return cut_object(self.coco.read_image(image_id), self.coco.object_mask(image_id), image_id)

    def __getitem__(self, index: int) -> LabelledFrame:
        frame = self.frames[index]
        sample = read_frame(frame)
        height, width = sample.label_ids.shape
        rng = np.random.default_rng([self.config.seed, index])
        fits = np.flatnonzero((self.extents[:, 0] <= height) & (self.extents[:, 1] <= width))
        if fits.size == 0:
            raise DataError(f"{frame.image}: no filtered COCO object fits in its {width}x{height} frame")
        obj = self.cut(self.pool[int(fits[rng.integers(fits.size)])])
        top = int(rng.integers(height - obj.mask.shape[0] + 1))
        left = int(rng.integers(width - obj.mask.shape[1] + 1))
        image, pasted = paste_object(sample.image, obj, top, left)
        return LabelledFrame(frame.name, image, anomaly_mix_label(label_ids_to_train_ids(sample.label_ids), pasted))

    def __iter__(self) -> Iterator[LabelledFrame]:
        for index in range(len(self)):
            yield self[index]
