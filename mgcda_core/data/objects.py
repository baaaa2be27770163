"""Object cut-outs for AnomalyMix from three kinds of real sources, each object with an identity so that some
identities can be held out of training for validation.

- ``coco_yolo_objects``: COCO images with YOLO-seg polygon labels (``images/<split>/<id>.jpg`` +
  ``labels/<split>/<id>.txt``, one instance a line: ``class x1 y1 x2 y2 ...`` normalised to [0, 1], 80-class COCO
  index; as in YOLO, the images define the set and an image without a label file has no instance). One object per instance of a class absent from Cityscapes; identity ``coco/<class name>``.
- ``mask_folder_objects``: DAVIS-style ``<sequence>/<frame>.jpg`` + ``<sequence>/<frame>.png`` (mask > 127 is the
  object); identity ``davis/<sequence>``.
- ``figure_ground_objects``: Weizmann-style ``rgb/<name>.jpg`` + ``figure_ground/<name>.png``; identity
  ``weizmann/<name>`` (each image shows another horse).

Objects are listed without reading pixels (``ObjectRef``); ``load_object`` reads and crops one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from mgcda_core.data.anomalymix import EXCLUDED_COCO_CATEGORIES, CutObject, cut_object
from mgcda_core.errors import ConfigError, DataError, MissingInputError
from mgcda_core.utils.images import read_label, read_rgb, require_image_size

# The 80 COCO class names in YOLO's index order: torchvision's 91-id category list without its "N/A" gaps.
COCO_CLASSES = tuple(name for name in MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
                     if name not in ("__background__", "N/A"))
# Classes that Cityscapes has (PEBAL's list, plus train, a Cityscapes class): never pasted as anomalies.
CITYSCAPES_LIKE_COCO_CLASSES = (*EXCLUDED_COCO_CATEGORIES, "train")
MIN_OBJECT_PIXELS = 32 * 32  # smaller instances (distant, partly hidden) are not usable cut-outs
MIN_POLYGON_AREA = 0.01  # of the image: COCO instances below it (~3,000 px at 640x480) are not listed


@dataclass(frozen=True)
class ObjectRef:
    """One object: its identity, image file and where its mask comes from (a mask file or a polygon)."""

    identity: str
    image: Path
    mask: Path | None = None
    polygon: tuple[float, ...] | None = None  # normalised x1, y1, x2, y2, ... (YOLO-seg)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise MissingInputError(f"{what} folder not found: {path}")


def _parse_yolo_line(line: str, path: Path, number: int) -> tuple[int, tuple[float, ...]]:
    parts = line.split()
    try:
        cls, coords = int(parts[0]), tuple(float(v) for v in parts[1:])
    except (ValueError, IndexError):
        raise DataError(f"{path}:{number}: expected 'class x1 y1 x2 y2 ...' numbers, got {line[:200]!r}") from None
    if not 0 <= cls < len(COCO_CLASSES):
        raise DataError(f"{path}:{number}: class {cls} is outside the 80 COCO classes (0..{len(COCO_CLASSES) - 1})")
    if len(coords) < 6 or len(coords) % 2:
        raise DataError(f"{path}:{number}: a polygon needs an even number (>= 6) of coordinates, got {len(coords)}")
    if min(coords) < 0 or max(coords) > 1:
        raise DataError(f"{path}:{number}: polygon coordinates must be normalised to [0, 1]")
    return cls, coords


def polygon_area(polygon: Sequence[float]) -> float:
    """Area of a closed polygon x1, y1, x2, y2, ... (shoelace formula), in the coordinates' units squared."""
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def coco_yolo_objects(root: str | os.PathLike[str], split: str = "train2017",
                      excluded: Sequence[str] = CITYSCAPES_LIKE_COCO_CLASSES) -> list[ObjectRef]:
    """Instances of classes not in ``excluded`` covering at least ``MIN_POLYGON_AREA`` of their image, one
    ``ObjectRef`` each, sorted by image then line."""
    root = Path(root)
    images, labels = root / "images" / split, root / "labels" / split
    _require_dir(images, "COCO YOLO-seg image")
    _require_dir(labels, "COCO YOLO-seg label")
    unknown = sorted(set(excluded) - set(COCO_CLASSES))
    if unknown:
        raise ConfigError(f"excluded classes {unknown} are not COCO class names")
    refs = []
    # YOLO's convention: the images define the set; an image without a label file shows no instance
    for image in sorted(images.glob("*.jpg")):
        label = labels / f"{image.stem}.txt"
        if not label.is_file():
            continue
        for number, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            cls, polygon = _parse_yolo_line(line, label, number)
            if COCO_CLASSES[cls] not in excluded and polygon_area(polygon) >= MIN_POLYGON_AREA:
                refs.append(ObjectRef(f"coco/{COCO_CLASSES[cls]}", image, polygon=polygon))
    if not refs:
        raise DataError(f"{labels}: no instance of a class outside {list(excluded)}")
    return refs


def _with_masks(pairs: Iterable[tuple[str, Path, Path]], empty: str) -> list[ObjectRef]:
    """``ObjectRef``s of (identity, image, mask) triples; a missing mask is an error naming the image."""
    refs = []
    for identity, image, mask in pairs:
        if not mask.is_file():
            raise MissingInputError(f"{image}: its mask {mask} is missing")
        refs.append(ObjectRef(identity, image, mask=mask))
    if not refs:
        raise DataError(empty)
    return refs


def mask_folder_objects(root: str | os.PathLike[str]) -> list[ObjectRef]:
    """Every ``<sequence>/<frame>.jpg`` with its ``.png`` mask; identity ``davis/<sequence>``."""
    root = Path(root)
    _require_dir(root, "object sequence")
    return _with_masks(((f"davis/{sequence.name}", image, image.with_suffix(".png"))
                        for sequence in sorted(p for p in root.iterdir() if p.is_dir())
                        for image in sorted(sequence.glob("*.jpg"))),
                       f"{root}: no <sequence>/<frame>.jpg with a .png mask")


def figure_ground_objects(root: str | os.PathLike[str]) -> list[ObjectRef]:
    """Every ``rgb/<name>.jpg`` with ``figure_ground/<name>.png``; identity ``weizmann/<name>``."""
    root = Path(root)
    rgb, masks = root / "rgb", root / "figure_ground"
    _require_dir(rgb, "figure/ground image")
    _require_dir(masks, "figure/ground mask")
    return _with_masks(((f"weizmann/{image.stem}", image, masks / f"{image.stem}.png")
                        for image in sorted(rgb.glob("*.jpg"))), f"{rgb}: no .jpg images")


def load_object(ref: ObjectRef) -> CutObject:
    """Read ``ref``'s image and mask and crop both to the mask's box; a mask of another size, an empty mask or one
    under ``MIN_OBJECT_PIXELS`` is an error naming the file."""
    image = read_rgb(ref.image)
    if ref.polygon is not None:
        height, width = image.shape[:2]
        points = np.round(np.array(ref.polygon).reshape(-1, 2) * (width, height)).astype(np.int32)
        mask: np.ndarray = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(mask, [points], 1)
        source = ref.image
    elif ref.mask is not None:
        grey = read_label(ref.mask)
        require_image_size(grey, image, ref.mask, ref.image, what="mask size")
        mask = grey > 127
        source = ref.mask
    else:
        raise DataError(f"object {ref.identity} ({ref.image}) has neither a mask file nor a polygon")
    pixels = int(np.count_nonzero(mask))
    if pixels < MIN_OBJECT_PIXELS:
        raise DataError(f"{source}: object {ref.identity} has {pixels} mask pixels, fewer than the "
                         f"{MIN_OBJECT_PIXELS} a cut-out needs")
    return cut_object(image, mask.astype(bool))


def split_identities(refs: Sequence[ObjectRef], every: int = 4) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(training, held-out) by identity: within each source (the part before '/'), identities sorted by name and
    every ``every``-th one (the 4th, 8th, ...) held out, so validation objects are ones training never saw."""
    if every < 2:
        raise ConfigError(f"every must be >= 2 (hold out one identity in every), got {every}")
    held: set[str] = set()
    for source in sorted({ref.identity.split("/", 1)[0] for ref in refs}):
        identities = sorted({ref.identity for ref in refs if ref.identity.split("/", 1)[0] == source})
        held.update(identities[every - 1::every])
    return [r for r in refs if r.identity not in held], [r for r in refs if r.identity in held]
