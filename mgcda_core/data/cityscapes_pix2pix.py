"""Reader for the pix2pix version of Cityscapes: ``<root>/<split>/<N>.jpg``, each a 512x256 JPEG whose left half is
the leftImg8bit frame squashed to 256x256 and whose right half is its gtFine *colour* rendering.

Decoding (the facts come from cityscapesscripts' label table, never retyped here):
- the image half is resized back to the 2:1 aspect of the original frame (bilinear, to ``size``);
- every label pixel is mapped to the nearest colour of the Cityscapes palette; a pixel farther than
  ``max_distance`` (Euclidean, RGB) from every palette colour — JPEG ringing on edges — gets ``UNMATCHED`` (255),
  never a guessed class; the label is then resized with nearest neighbour only.
- The result holds Cityscapes *label ids*, one representative per palette colour, so that the VoidClass rule and
  the train-id table apply unchanged: black (unlabeled, ego vehicle, rectification border, out of roi, static)
  decodes to ``unlabeled`` (0, void, ignored), ``dynamic`` (111, 74, 0) keeps its own id 5, and colours that two
  classes share decode to the class that is evaluated (polegroup → pole, license plate → car).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.errors import ConfigError, DataError, MissingInputError
from mgcda_core.utils.images import read_rgb, resize_nearest

UNMATCHED = 255  # a label pixel with no palette colour within the distance threshold (ignored downstream)
DEFAULT_MAX_DISTANCE = 30.0  # RGB distance; leaves ~9.5 % of pixels (JPEG-blurred edges) unmatched


def _palette() -> tuple[np.ndarray, np.ndarray]:
    """(K x 3 int32 colours, K uint8 label ids): one entry per distinct colour of the table.

    Where classes share a colour, an evaluated class (train id < 255) wins over an ignored one, then the lowest id.
    """
    chosen: dict[tuple[int, int, int], tuple[bool, int]] = {}
    for label in CITYSCAPES_LABELS:
        if label.id < 0:
            continue  # license plate (id -1) never occurs in label-id images; its colour is car's
        rank = (label.ignoreInEval, label.id)
        red, green, blue = label.color
        colour = (int(red), int(green), int(blue))
        if colour not in chosen or rank < chosen[colour]:
            chosen[colour] = rank
    colours = sorted(chosen)
    return (np.array(colours, dtype=np.int32), np.array([chosen[c][1] for c in colours], dtype=np.uint8))


PALETTE_COLOURS, PALETTE_LABEL_IDS = _palette()


def decode_colour_label(colour: np.ndarray, max_distance: float = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """HxWx3 uint8 Cityscapes colour rendering → HxW uint8 label ids, ``UNMATCHED`` where no palette colour lies
    within ``max_distance`` (nearest palette colour otherwise)."""
    if colour.ndim != 3 or colour.shape[2] != 3 or colour.dtype != np.uint8:
        raise DataError(f"expected an HxWx3 uint8 colour label, got shape {colour.shape} dtype {colour.dtype}")
    if not max_distance >= 0:
        raise ConfigError(f"max_distance must be >= 0, got {max_distance}")
    pixels = colour.reshape(-1, 1, 3).astype(np.int32)
    distance2 = ((pixels - PALETTE_COLOURS[None]) ** 2).sum(-1)  # N x K squared distances
    nearest = distance2.argmin(1)
    ids = PALETTE_LABEL_IDS[nearest]
    ids[distance2[np.arange(nearest.size), nearest] > max_distance**2] = UNMATCHED
    return ids.reshape(colour.shape[:2])


class Pix2PixSample(NamedTuple):
    name: str
    image: np.ndarray      # HxWx3 uint8 RGB at the reader's size
    label_ids: np.ndarray  # HxW uint8 Cityscapes label ids, UNMATCHED where the colour was ambiguous


@dataclass(frozen=True)
class Pix2PixFrame:
    name: str  # cityscapes_<split>_<N>
    path: Path


class CityscapesPix2Pix:
    """The frames of one split, sorted by their number; ``reader[i]`` decodes frame i (see the module doc)."""

    def __init__(self, root: str | os.PathLike[str], split: str = "train",
                 size: tuple[int, int] = DEFAULT_INPUT_SIZE, max_distance: float = DEFAULT_MAX_DISTANCE) -> None:
        folder = Path(root) / split
        if not folder.is_dir():
            raise MissingInputError(f"pix2pix Cityscapes folder not found: {folder} (expected <root>/{split}/<N>.jpg)")
        paths = [p for p in folder.iterdir() if p.suffix.lower() == ".jpg"]
        not_numbered = [p.name for p in paths if not p.stem.isdigit()]
        if not_numbered:
            raise DataError(f"{folder}: file {not_numbered[0]} is not named <N>.jpg as the pix2pix set is")
        if not paths:
            raise MissingInputError(f"{folder}: no <N>.jpg frames")
        self.split = split
        self.size = size
        self.max_distance = max_distance
        self.frames = [Pix2PixFrame(f"cityscapes_{split}_{p.stem}", p) for p in sorted(paths, key=lambda p: int(p.stem))]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Pix2PixSample:
        frame = self.frames[index]
        pair = read_rgb(frame.path)
        height, width = pair.shape[:2]
        if width != 2 * height:
            raise DataError(f"{frame.path}: size {width}x{height}, expected a side-by-side pair twice as wide as "
                             f"high (image | colour label)")
        image = cv2.resize(pair[:, :height], (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        label_ids = resize_nearest(decode_colour_label(np.ascontiguousarray(pair[:, height:]), self.max_distance),
                                   self.size)
        return Pix2PixSample(frame.name, image, label_ids)
