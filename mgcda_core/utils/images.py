"""Image reading and writing with clear errors (PIL underneath)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from mgcda_core.utils.atomic import atomic_write_with


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array: grey (HxW or HxWx1) is replicated, RGBA drops alpha.

    Raises ValueError naming the shape or dtype when the input is not an image.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {image.shape}")
    height, width = image.shape[:2]
    if height < 2 or width < 2:
        raise ValueError(f"image of size {width}x{height} is too small: expected at least 2x2 pixels")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grey and RGBA converted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as img:
        return to_rgb(np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB", "RGBA") else img))


def read_label(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-channel label image (uint8 or uint16 ids) as an HxW array.

    A colour image where ids are expected is refused, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label image not found: {path}")
    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16", "1"):
            raise ValueError(f"{path}: expected a single-channel label image of ids, got mode {img.mode!r} (a colour mask?)")
        array = np.asarray(img)
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel label image, got shape {array.shape}")
    return array


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an HxW or HxWx3 array to (height, width) (Synboost resizes every map this way,
    so label ids and uint8 maps keep their values); returned unchanged when already that size."""
    height, width = size
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.NEAREST))


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an HxW or HxWx3 uint8 array as PNG, atomically."""
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {array.dtype}")
    image = Image.fromarray(array)
    atomic_write_with(path, lambda f: image.save(f, format="PNG"))
