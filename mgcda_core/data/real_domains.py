"""MGCDA's two training domains built from real driving frames (``python -m mgcda_core.prepare --train-real``).

- ``RealVoidClass`` (V): Cityscapes frames (the pix2pix colour-label version) labelled by the VoidClass rule of
  ``mgcda_core.data.voidclass``: ``dynamic`` void objects are anomalies, every other void or ignored pixel (and
  every colour that matched no palette entry) is 255.
- ``RealAnomalyMix`` (A): real object cut-outs pasted into real backgrounds (Cityscapes and CamVid). Unlike PEBAL's
  one unscaled paste into a 1024x2048 frame, backgrounds here are already at the network size, so objects are
  scaled: each background gets ``variants`` versions, each with 1 to ``max_objects`` objects drawn from all
  sources. An object's foot is put on a random road pixel (train id 0; anywhere when the frame shows no road),
  and its height is a random share of the frame height that grows towards the bottom of the frame, as perspective
  makes nearer objects larger. Pasted pixels are 1, background void/ignored pixels 255, the rest 0 (PEBAL's rule).

Frame ``i`` uses ``numpy.random.default_rng([seed, i])``, so every frame is reproducible alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.data.anomalymix import anomaly_mix_label
from mgcda_core.data.camvid import CamVid
from mgcda_core.data.cityscapes import LabelledFrame, label_ids_to_train_ids
from mgcda_core.data.cityscapes_pix2pix import CityscapesPix2Pix
from mgcda_core.data.objects import ObjectRef, load_object
from mgcda_core.data.voidclass import VoidClassConfig, void_class_label
from mgcda_core.errors import ConfigError
from mgcda_core.utils.images import resize_nearest

ROAD_TRAIN_ID = 0


class Named(NamedTuple):
    name: str


class Background(NamedTuple):
    name: str
    image: np.ndarray      # HxWx3 uint8 RGB at the network size
    train_ids: np.ndarray  # HxW uint8 Cityscapes train ids, 255 = void / ignored


class BackgroundSource(Protocol):
    def __len__(self) -> int: ...

    def background(self, index: int) -> Background: ...

    def name(self, index: int) -> str: ...


class _ReaderBackgrounds:
    """Length and frame names of a reader whose ``frames`` carry a ``name``."""

    def __init__(self, reader: CityscapesPix2Pix | CamVid) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def name(self, index: int) -> str:
        return self.reader.frames[index].name


class Pix2PixBackgrounds(_ReaderBackgrounds):
    """Cityscapes pix2pix frames as backgrounds (train ids from the decoded colour label)."""

    reader: CityscapesPix2Pix

    def background(self, index: int) -> Background:
        sample = self.reader[index]
        return Background(sample.name, sample.image, label_ids_to_train_ids(sample.label_ids))


class CamVidBackgrounds(_ReaderBackgrounds):
    """CamVid frames resized to the network size (image bilinear, labels nearest) as backgrounds."""

    reader: CamVid

    def __init__(self, reader: CamVid, size: tuple[int, int] = DEFAULT_INPUT_SIZE) -> None:
        super().__init__(reader)
        self.size = size

    def background(self, index: int) -> Background:
        sample = self.reader[index]
        image = cv2.resize(sample.image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return Background(sample.name, image, resize_nearest(sample.train_ids, self.size))


class RealVoidClass:
    """V: ``reader``'s frames labelled by the VoidClass rule (see the module doc)."""

    def __init__(self, reader: CityscapesPix2Pix, config: VoidClassConfig | None = None) -> None:
        self.reader = reader
        self.config = config if config is not None else VoidClassConfig()
        self.frames = [Named(frame.name) for frame in reader.frames]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> LabelledFrame:
        sample = self.reader[index]
        return LabelledFrame(sample.name, sample.image, void_class_label(sample.label_ids, self.config))


@dataclass(frozen=True)
class PasteConfig:
    """How objects are scaled and placed (see the module doc)."""

    variants: int = 2            # versions of every background, each with its own objects
    max_objects: int = 3         # objects per version: uniform in 1..max_objects
    min_height: float = 0.08     # object height as a share of the frame height, at the top of the frame ...
    max_height: float = 0.45     # ... up to this share at its bottom
    max_width: float = 0.5       # an object wider than this share of the frame is shrunk to it
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variants < 1 or self.max_objects < 1:
            raise ConfigError(f"variants and max_objects must be >= 1, got {self.variants}, {self.max_objects}")
        if not 0 < self.min_height <= self.max_height <= 1 or not 0 < self.max_width <= 1:
            raise ConfigError(f"object sizes must satisfy 0 < min_height <= max_height <= 1 and 0 < max_width <= 1, "
                             f"got {self.min_height}, {self.max_height}, {self.max_width}")


def paste_scaled(image: np.ndarray, train_ids: np.ndarray, objects: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                 rng: np.random.Generator, config: PasteConfig) -> tuple[np.ndarray, np.ndarray]:
    """Paste each (object image, bool mask) into a copy of ``image`` as the module doc describes; returns the image
    and the HxW bool mask of pasted pixels (later objects cover earlier ones)."""
    height, width = train_ids.shape
    out = image.copy()
    pasted = np.zeros((height, width), dtype=bool)
    road = np.flatnonzero(train_ids.ravel() == ROAD_TRAIN_ID)
    for obj, mask in zip(objects, masks):
        foot = int(road[rng.integers(road.size)]) if road.size else int(rng.integers(height * width))
        row, col = divmod(foot, width)
        share = config.min_height + (config.max_height - config.min_height) * row / max(height - 1, 1)
        scale = share * height * rng.uniform(0.6, 1.0) / mask.shape[0]
        scale = min(scale, config.max_width * width / mask.shape[1])
        h, w = max(2, round(mask.shape[0] * scale)), max(2, round(mask.shape[1] * scale))
        obj_small = cv2.resize(obj, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        mask_small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        # the object's bottom centre at the foot pixel, clipped to the frame
        top, left = row - h + 1, col - w // 2
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + h, height), min(left + w, width)
        if y1 <= y0 or x1 <= x0:
            continue
        region = mask_small[y0 - top:y1 - top, x0 - left:x1 - left]
        out[y0:y1, x0:x1][region] = obj_small[y0 - top:y1 - top, x0 - left:x1 - left][region]
        pasted[y0:y1, x0:x1] |= region
    return out, pasted


class RealAnomalyMix:
    """A: every background of ``backgrounds`` in ``config.variants`` versions with pasted ``objects``."""

    def __init__(self, backgrounds: Sequence[BackgroundSource], objects: Sequence[ObjectRef],
                 config: PasteConfig = PasteConfig()) -> None:
        if not objects:
            raise ConfigError("RealAnomalyMix needs at least one object to paste")
        self.backgrounds = list(backgrounds)
        self.objects = list(objects)
        self.config = config
        self._index = [(source, i) for source, bg in enumerate(self.backgrounds) for i in range(len(bg))]
        self.frames = [Named(f"{self.backgrounds[s].name(i)}_mix{v}")
                       for v in range(config.variants) for s, i in self._index]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> LabelledFrame:
        source, bg_index = self._index[index % len(self._index)]
        background = self.backgrounds[source].background(bg_index)
        rng = np.random.default_rng([self.config.seed, index])
        count = int(rng.integers(1, self.config.max_objects + 1))
        cut = [load_object(self.objects[int(k)]) for k in rng.integers(len(self.objects), size=count)]
        image, pasted = paste_scaled(background.image, background.train_ids, [c.image for c in cut],
                                     [c.mask for c in cut], rng, self.config)
        return LabelledFrame(self.frames[index].name, image, anomaly_mix_label(background.train_ids, pasted))
