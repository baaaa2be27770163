"""VoidClass domain (V): Cityscapes frames whose void objects are the anomalies, as Synboost labels them.

Rule (docs/DATA.md gives the sources):
- 1 (anomaly): pixels whose label id is one of ``anomaly_label_ids`` — by default ``dynamic`` (5), the void
  class Synboost marks as unknown (``create_unknown_examples(..., dynamic=True)``: ``semantic_img == 5``);
- 255 (ignore): every other pixel whose train id is 255 (the void category 0..6 and the classes ignored in
  evaluation, e.g. parking, guard rail, polegroup, caravan), as Synboost's ``update_labels_to_ignore_void``
  (``label[semantic == 255] = 255``); ``static`` (4) is among them, as in Synboost's ``include_void_to_labels``;
- 0 (normal): everything else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mgcda_core.constants import IGNORE_INDEX
from mgcda_core.data.cityscapes import (
    LabelledFrame,
    label_id,
    label_ids_of_category,
    label_ids_to_train_ids,
    list_frames,
    read_frame,
)
from mgcda_core.errors import DataError


@dataclass(frozen=True)
class VoidClassConfig:
    """Which void classes count as objects (anomalies); the default follows Synboost (dynamic only)."""

    anomaly_classes: tuple[str, ...] = ("dynamic",)

    def __post_init__(self) -> None:
        void = set(label_ids_of_category("void"))
        outside = [name for name in self.anomaly_classes if label_id(name) not in void]
        if outside:
            raise DataError(f"anomaly classes {outside} are not in Cityscapes' void category "
                             f"(expected names among ids {sorted(void)}, e.g. 'dynamic', 'static')")

    @property
    def anomaly_label_ids(self) -> tuple[int, ...]:
        return tuple(label_id(name) for name in self.anomaly_classes)


def void_class_label(label_ids: np.ndarray, config: VoidClassConfig = VoidClassConfig()) -> np.ndarray:
    """HxW uint8 {0 normal, 1 void object, 255 other void/ignored} from Cityscapes label ids (rule above)."""
    label = np.where(label_ids_to_train_ids(label_ids) == IGNORE_INDEX, IGNORE_INDEX, 0).astype(np.uint8)
    label[np.isin(label_ids, config.anomaly_label_ids)] = 1
    return label


class VoidClass:
    """The frames of a Cityscapes split, labelled by the VoidClass rule (same interface as ``AnomalyMix``)."""

    def __init__(self, cityscapes_root: str | os.PathLike[str], split: str = "train",
                 config: VoidClassConfig = VoidClassConfig()) -> None:
        self.config = config
        self.frames = list_frames(cityscapes_root, split)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> LabelledFrame:
        frame = self.frames[index]
        sample = read_frame(frame)
        return LabelledFrame(frame.name, sample.image, void_class_label(sample.label_ids, self.config))

    def __iter__(self) -> Iterator[LabelledFrame]:
        for index in range(len(self)):
            yield self[index]
