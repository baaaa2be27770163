"""Cityscapes reader: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``gtFine/<split>/<city>/*_gtFine_labelIds.png`` and ``*_gtFine_instanceIds.png``.

Label facts (id → trainId, category, ignoreInEval) come from ``cityscapesscripts.helpers.labels``, never retyped here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS
from cityscapesscripts.helpers.labels import name2label

from mgcda_core.constants import IGNORE_INDEX
from mgcda_core.errors import ConfigError, DataError, MissingInputError
from mgcda_core.utils.images import read_label, read_rgb, require_image_size

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"

# Label ids that occur in labelIds images (the table's license plate has id -1 and never appears in them).
VALID_LABEL_IDS = frozenset(label.id for label in CITYSCAPES_LABELS if label.id >= 0)


def _build_train_id_lut() -> np.ndarray:
    """256-entry id → trainId table; trainId -1 / 255 (ignoreInEval classes) and unknown ids map to 255."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in CITYSCAPES_LABELS:
        if label.id >= 0 and 0 <= label.trainId < IGNORE_INDEX:
            lut[label.id] = label.trainId
    return lut


TRAIN_ID_LUT = _build_train_id_lut()


def label_id(name: str) -> int:
    """Cityscapes label id of a class name (e.g. ``"dynamic"`` → 5), from cityscapesscripts' table."""
    if name not in name2label:
        raise ConfigError(f"unknown Cityscapes class {name!r}; expected one of {sorted(name2label)}")
    return int(name2label[name].id)


def label_ids_of_category(category: str) -> tuple[int, ...]:
    """All label ids whose cityscapesscripts category is ``category`` (e.g. ``"void"`` → 0..6)."""
    ids = tuple(label.id for label in CITYSCAPES_LABELS if label.category == category and label.id >= 0)
    if not ids:
        raise ConfigError(f"no Cityscapes labels in category {category!r}")
    return ids


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map an HxW array of Cityscapes label ids to uint8 train ids (255 = ignored in evaluation)."""
    if label_ids.ndim != 2:
        raise DataError(f"expected an HxW label-id array, got shape {label_ids.shape}")
    if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
        raise DataError(f"label ids must lie in 0..255, got range {label_ids.min()}..{label_ids.max()}")
    return TRAIN_ID_LUT[label_ids.astype(np.intp)]


@dataclass(frozen=True)
class CityscapesFrame:
    """Paths of one Cityscapes frame; ``name`` is ``<city>_<seq>_<frame>`` (e.g. frankfurt_000000_000294)."""

    name: str
    city: str
    image: Path
    label_ids: Path
    instance_ids: Path


class CityscapesSample(NamedTuple):
    image: np.ndarray         # HxWx3 uint8 RGB
    label_ids: np.ndarray     # HxW uint8 Cityscapes label ids
    instance_ids: np.ndarray  # HxW int32: label id for stuff, label id * 1000 + k for instances


class LabelledFrame(NamedTuple):
    """One training frame of a domain (VoidClass or AnomalyMix) before the inference stages run."""

    name: str
    image: np.ndarray   # HxWx3 uint8 RGB
    label: np.ndarray   # HxW uint8: 0 normal, 1 anomaly, 255 ignore


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise MissingInputError(f"Cityscapes {what} folder not found: {path} (expected the official layout "
                                f"<root>/leftImg8bit/<split>/<city>/*{IMAGE_SUFFIX} and "
                                f"<root>/gtFine/<split>/<city>/*{LABEL_IDS_SUFFIX})")


def list_frames(root: str | os.PathLike[str], split: str = "train") -> list[CityscapesFrame]:
    """All frames of ``split`` sorted by name; every image must have its labelIds and instanceIds files."""
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    _require_dir(image_dir, "image")
    _require_dir(label_dir, "label")
    frames = []
    for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        name = image.name[: -len(IMAGE_SUFFIX)]
        city = image.parent.name
        frame = CityscapesFrame(name, city, image, label_dir / city / f"{name}{LABEL_IDS_SUFFIX}",
                                label_dir / city / f"{name}{INSTANCE_IDS_SUFFIX}")
        for path in (frame.label_ids, frame.instance_ids):
            if not path.is_file():
                raise MissingInputError(f"{image}: its label file {path} is missing")
        frames.append(frame)
    if not frames:
        raise MissingInputError(f"no *{IMAGE_SUFFIX} images under {image_dir}/<city>/")
    return frames


def read_label_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ``*_labelIds.png`` as HxW uint8; refuses colour masks and ids outside cityscapesscripts' table."""
    ids = read_label(path)
    if ids.dtype != np.uint8:
        raise DataError(f"{path}: expected 8-bit Cityscapes label ids, got dtype {ids.dtype}")
    unknown = sorted(set(np.unique(ids).tolist()) - VALID_LABEL_IDS)
    if unknown:
        raise DataError(f"{path}: values {unknown[:10]} are not Cityscapes label ids (expected 0..33 from "
                         f"cityscapesscripts' table; a trainIds or colour image?)")
    return ids


def read_instance_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ``*_instanceIds.png`` (16- or 32-bit) as HxW int32."""
    return read_label(path).astype(np.int32)


def read_frame(frame: CityscapesFrame) -> CityscapesSample:
    """Read image, label ids and instance ids of ``frame``; all three must have the same size."""
    image = read_rgb(frame.image)
    label_ids = read_label_ids(frame.label_ids)
    instance_ids = read_instance_ids(frame.instance_ids)
    for path, array in ((frame.label_ids, label_ids), (frame.instance_ids, instance_ids)):
        require_image_size(array, image, path, frame.image)
    semantic_of_instances = np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids)
    if not np.array_equal(semantic_of_instances, label_ids):
        raise DataError(f"{frame.instance_ids}: instance ids disagree with {frame.label_ids} (expected the "
                         f"label id for stuff and label id * 1000 + k for instances)")
    return CityscapesSample(image, label_ids, instance_ids)
