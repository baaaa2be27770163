"""Reader for CamVid in SegNet's layout: ``<root>/<split>.txt`` lists ``<image> <label>`` pairs (paths relative
to the root), images RGB, labels single-channel ids 0..11 (11 = unlabelled / void).

Labels are returned as Cityscapes train ids (CamVid has no wall, terrain, truck, bus, train, motorcycle, bicycle
or traffic-light class; those never occur): sky 10, building 2, pole 5, road 0, pavement (sidewalk) 1, tree
(vegetation) 8, sign/symbol (traffic sign) 7, fence 4, car 13, pedestrian (person) 11, bicyclist (rider) 12,
unlabelled → 255.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mgcda_core.constants import IGNORE_INDEX
from mgcda_core.errors import DataError, MissingInputError
from mgcda_core.utils.images import read_label, read_rgb, require_image_size

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist", "unlabelled")
CAMVID_VOID = 11
# CamVid id → Cityscapes train id, in CAMVID_CLASSES order.
CAMVID_TO_TRAIN_ID = np.array([10, 2, 5, 0, 1, 8, 7, 4, 13, 11, 12, IGNORE_INDEX], dtype=np.uint8)


class CamVidSample(NamedTuple):
    name: str
    image: np.ndarray      # HxWx3 uint8 RGB
    train_ids: np.ndarray  # HxW uint8 Cityscapes train ids (255 = CamVid void)


class CamVidFrame(NamedTuple):
    name: str  # camvid_<split>_<image stem>
    image: Path
    label: Path


def camvid_to_train_ids(ids: np.ndarray, path: str | os.PathLike[str] = "<array>") -> np.ndarray:
    """HxW CamVid ids (0..11) → Cityscapes train ids; any other value is an error naming ``path``."""
    if ids.size and int(ids.max()) > CAMVID_VOID:
        raise DataError(f"{path}: label value {int(ids.max())} is not a CamVid id (expected 0..{CAMVID_VOID}, "
                         f"{CAMVID_VOID} = unlabelled)")
    return CAMVID_TO_TRAIN_ID[ids.astype(np.intp)]


class CamVid:
    """The pairs listed in ``<root>/<split>.txt``, in file order; ``reader[i]`` reads pair i."""

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        self.root = Path(root)
        listing = self.root / f"{split}.txt"
        if not listing.is_file():
            raise MissingInputError(f"CamVid list not found: {listing} (expected <root>/{split}.txt with "
                                    f"'<image> <label>' lines)")
        self.frames: list[CamVidFrame] = []
        for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{listing}:{number}: expected '<image> <label>', got {line[:200]!r}")
            image, label = (self.root / part.lstrip("/") for part in parts)
            for path in (image, label):
                if not path.is_file():
                    raise MissingInputError(f"{listing}:{number}: {path} does not exist")
            self.frames.append(CamVidFrame(f"camvid_{split}_{image.stem}", image, label))
        if not self.frames:
            raise DataError(f"{listing}: lists no frames")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> CamVidSample:
        frame = self.frames[index]
        image = read_rgb(frame.image)
        ids = read_label(frame.label)
        require_image_size(ids, image, frame.label, frame.image)
        return CamVidSample(frame.name, image, camvid_to_train_ids(ids, frame.label))
