"""Readers for the evaluation sets in their released layouts (docs/DATA.md).

Every reader yields ``EvalSample(name, image HxWx3 uint8 RGB, label HxW uint8)`` with labels 0 normal,
1 anomaly, 255 ignore; a label value the set does not define is an error naming the file.

| name | root layout | label ids |
|---|---|---|
| ``road_anomaly`` | ``frame_list.json``, ``frames/<name>.jpg``, ``frames/<stem>.labels/labels_semantic.png`` | 0 → 0, 2 → 1 |
| ``fs_lost_and_found``, ``fs_static`` | ``original/<stem>.png``, ``labels/<stem>.png`` (Synboost/PEBAL layout; the root may also be the folder holding ``LostAndFound/`` or ``Static/``) | 0, 1, 255 |
| ``smiyc_anomaly`` (RoadAnomaly21), ``smiyc_obstacle`` (RoadObstacle21) | ``images/<fid>.jpg`` / ``.webp``, ``labels_masks/<fid>_labels_semantic.png`` | 0, 1, 255 |

SegmentMeIfYouCan publishes labels for its validation frames only: images without a label file are left out
and counted in ``EvalSet.num_unlabelled`` (the evaluate command prints it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mgcda_core.errors import ConfigError, DataError, MissingInputError, shorten
from mgcda_core.utils.images import read_label, read_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class EvalLayoutError(DataError):
    """An evaluation-set root does not have the expected layout."""


@dataclass(frozen=True)
class EvalFrame:
    name: str
    image_path: Path
    label_path: Path


@dataclass(frozen=True)
class EvalSample:
    name: str
    image: np.ndarray  # HxWx3 uint8 RGB
    label: np.ndarray  # HxW uint8: 0 normal, 1 anomaly, 255 ignore


class EvalSet(Sequence[EvalSample]):
    """An evaluation set: an ordered list of frames and the map from its label ids to {0, 1, 255}."""

    def __init__(self, name: str, root: Path, frames: list[EvalFrame], label_map: dict[int, int],
                 track: str = "anomaly", num_unlabelled: int = 0) -> None:
        self.name = name
        self.root = root
        self.frames = frames
        self.track = track
        self.num_unlabelled = num_unlabelled
        self._lut = np.full(256, -1, dtype=np.int16)
        for source, target in label_map.items():
            self._lut[source] = target

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> EvalSample:  # type: ignore[override]
        frame = self.frames[index]
        image = read_rgb(frame.image_path)
        raw = read_label(frame.label_path)
        if raw.shape != image.shape[:2]:
            raise DataError(f"{frame.label_path}: label shape {raw.shape} differs from image shape "
                             f"{image.shape[:2]} of {frame.image_path}")
        return EvalSample(frame.name, image, self.map_label(raw, frame.label_path))

    def map_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """Map the set's label ids to {0, 1, 255}; an id the set does not define is an error naming it."""
        defined = {int(k) for k in np.flatnonzero(self._lut >= 0)}
        present = {int(v) for v in np.flatnonzero(np.bincount(raw.ravel().astype(np.int64)))}
        unknown = sorted(present - defined)
        if unknown:
            raise DataError(f"{path}: label values {unknown[:10]} are not defined for {self.name}; "
                             f"expected only {sorted(defined)}")
        return self._lut[raw].astype(np.uint8)


def _expect(condition: bool, root: Path, name: str, layout: str) -> None:
    if not condition:
        raise EvalLayoutError(f"{root} is not a {name} root: expected {layout}")


def _image_for(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def road_anomaly(root: str | os.PathLike[str]) -> EvalSet:
    """RoadAnomaly (Lis et al. 2019), official layout; frames in ``frame_list.json`` order."""
    root = Path(root)
    layout = "frame_list.json and frames/<name>.jpg with frames/<name without suffix>.labels/labels_semantic.png"
    _expect((root / "frame_list.json").is_file() and (root / "frames").is_dir(), root, "RoadAnomaly", layout)
    try:
        names = json.loads((root / "frame_list.json").read_text())
    except ValueError as error:  # not JSON, or not UTF-8
        raise EvalLayoutError(f"{root / 'frame_list.json'}: not a JSON list of file names ({error})") from None
    _expect(isinstance(names, list) and all(isinstance(n, str) for n in names) and bool(names), root,
            "RoadAnomaly", layout + " (frame_list.json: a non-empty JSON list of file names)")
    frames = []
    for file_name in names:
        image_path = root / "frames" / file_name
        label_path = root / "frames" / f"{Path(file_name).stem}.labels" / "labels_semantic.png"
        for path in (image_path, label_path):
            if not path.is_file():
                raise EvalLayoutError(f"{path} is listed in {root / 'frame_list.json'} but missing; expected {layout}")
        frames.append(EvalFrame(Path(file_name).stem, image_path, label_path))
    return EvalSet("road_anomaly", root, frames, {0: 0, 2: 1})


def _original_labels(root: Path, name: str, set_name: str) -> EvalSet:
    """Frames of an ``original/`` + ``labels/`` folder pair (labels 0, 1, 255), in label-name order."""
    layout = "original/<name>.png and labels/<name>.png (labels 0, 1, 255)"
    _expect((root / "original").is_dir() and (root / "labels").is_dir(), root, name, layout)
    frames = []
    for label_path in sorted((root / "labels").glob("*.png")):
        image_path = _image_for(root / "original", label_path.stem)
        if image_path is None:
            raise EvalLayoutError(f"{label_path} has no image original/{label_path.stem}.{{png,jpg,webp}}; expected {layout}")
        frames.append(EvalFrame(label_path.stem, image_path, label_path))
    _expect(bool(frames), root, name, layout + " (no label file found)")
    return EvalSet(set_name, root, frames, {0: 0, 1: 1, 255: 255})


def _fishyscapes(root: str | os.PathLike[str], split: str) -> EvalSet:
    root = Path(root)
    if (root / split).is_dir() and not (root / "original").is_dir():
        root = root / split
    return _original_labels(root, f"Fishyscapes {split}", f"fs_{split.lower()}")


def training_layout(root: str | os.PathLike[str]) -> EvalSet:
    """A domain of the training layout (``python -m mgcda_core.prepare``), e.g. the validation AnomalyMix built
    with ``--train-real``: its ``original/`` images against its ``labels/``."""
    return _original_labels(Path(root), "training layout", "layout")


def fishyscapes_lost_and_found(root: str | os.PathLike[str]) -> EvalSet:
    """Fishyscapes Lost & Found (validation, 100 frames) in the Synboost/PEBAL layout."""
    return _fishyscapes(root, "LostAndFound")


def fishyscapes_static(root: str | os.PathLike[str]) -> EvalSet:
    """Fishyscapes Static (validation, 30 frames) in the Synboost/PEBAL layout."""
    return _fishyscapes(root, "Static")


def _smiyc(root: str | os.PathLike[str], track: str) -> EvalSet:
    root = Path(root)
    name = {"anomaly": "SegmentMeIfYouCan RoadAnomaly21", "obstacle": "SegmentMeIfYouCan RoadObstacle21"}[track]
    layout = "images/<fid>.jpg|.webp and labels_masks/<fid>_labels_semantic.png (labels 0, 1, 255)"
    _expect((root / "images").is_dir() and (root / "labels_masks").is_dir(), root, name, layout)
    images = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    frames = []
    for image_path in images:
        label_path = root / "labels_masks" / f"{image_path.stem}_labels_semantic.png"
        if label_path.is_file():
            frames.append(EvalFrame(image_path.stem, image_path, label_path))
    _expect(bool(frames), root, name, layout + f" ({len(images)} images, none with a label file)")
    return EvalSet(f"smiyc_{track}", root, frames, {0: 0, 1: 1, 255: 255}, track=track,
                   num_unlabelled=len(images) - len(frames))


def smiyc_road_anomaly(root: str | os.PathLike[str]) -> EvalSet:
    """SegmentMeIfYouCan anomaly track (RoadAnomaly21, ``dataset_AnomalyTrack``)."""
    return _smiyc(root, "anomaly")


def smiyc_road_obstacle(root: str | os.PathLike[str]) -> EvalSet:
    """SegmentMeIfYouCan obstacle track (RoadObstacle21, ``dataset_ObstacleTrack``, WebP images)."""
    return _smiyc(root, "obstacle")


EVAL_SETS: dict[str, Callable[[str | os.PathLike[str]], EvalSet]] = {
    "road_anomaly": road_anomaly,
    "fs_lost_and_found": fishyscapes_lost_and_found,
    "fs_static": fishyscapes_static,
    "smiyc_anomaly": smiyc_road_anomaly,
    "smiyc_obstacle": smiyc_road_obstacle,
    "layout": training_layout,
}


def open_eval_set(name: str, root: str | os.PathLike[str]) -> EvalSet:
    """Open the evaluation set ``name`` (one of ``EVAL_SETS``) at ``root``."""
    if name not in EVAL_SETS:
        raise ConfigError(f"unknown evaluation set {shorten(name)}: expected one of {sorted(EVAL_SETS)}")
    if not Path(root).is_dir():
        raise MissingInputError(f"evaluation set root {root} is not a folder")
    return EVAL_SETS[name](root)
