"""Image reading and writing with clear errors (PIL underneath).

Readers refuse a file whose header declares more than ``max_pixels`` before decoding it: PIL's ``Image.open``
reads only the header, so a few hundred bytes declaring 65500 x 65500 pixels cost nothing until ``np.asarray``.
A file that does not decode (corrupt, truncated, not an image) is a :class:`DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from mgcda_core.errors import DataError, MissingInputError, shorten
from mgcda_core.utils.atomic import atomic_write_with

DEFAULT_MAX_PIXELS = 4096 * 4096  # above any camera or data set frame read here (Cityscapes: 2048 x 1024)
HARD_MAX_PIXELS = 8192 * 8192  # no max_pixels may exceed this: 200 MB as 8-bit RGB
# What PIL and its codecs raise for a corrupt, truncated or foreign file (a bad PNG chunk is a SyntaxError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array: grey (HxW or HxWx1) is replicated, RGBA drops alpha.

    Raises DataError (a ValueError) naming the shape or dtype when the input is not an image.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DataError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"expected an image of shape HxW, HxWx1, HxWx3 or HxWx4, got {image.shape}")
    height, width = image.shape[:2]
    if height < 2 or width < 2:
        raise DataError(f"image of size {width}x{height} is too small: expected at least 2x2 pixels")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def check_pixels(size: tuple[int, int], max_pixels: int, source: str) -> None:
    """Refuse an image whose (width, height) exceeds ``max_pixels`` (itself capped at ``HARD_MAX_PIXELS``)."""
    if not 0 < max_pixels <= HARD_MAX_PIXELS:
        raise ValueError(f"max_pixels must lie in 1..{HARD_MAX_PIXELS}, got {max_pixels}")
    width, height = size
    if width * height > max_pixels:
        raise DataError(f"{source}: image declares {width}x{height} pixels, more than the limit of {max_pixels}")


@contextlib.contextmanager
def _decoding(path: Path, what: str, max_pixels: int) -> Iterator[Image.Image]:
    """The opened image, size-checked before any pixel is decoded; decoding errors name the file."""
    if not path.is_file():
        raise MissingInputError(f"{what} not found: {path}")
    try:
        with Image.open(path) as img:
            check_pixels(img.size, max_pixels, str(path))
            yield img
    except DataError:
        raise
    except DECODE_ERRORS as error:
        raise DataError(f"{path}: not a readable {what} ({type(error).__name__}: "
                        f"{shorten(str(error))})") from None


def require_image_size(array: np.ndarray, image: np.ndarray, path: str | os.PathLike[str],
                       image_path: str | os.PathLike[str], what: str = "size") -> None:
    """Refuse a label or mask (``array``, read from ``path``) whose height and width differ from its image's."""
    if array.shape[:2] != image.shape[:2]:
        raise DataError(f"{path}: {what} {array.shape[1]}x{array.shape[0]} differs from its image {image_path} "
                        f"({image.shape[1]}x{image.shape[0]}); expected equal sizes")


def read_rgb(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (grey and RGBA converted)."""
    return _read(Path(path), "image", max_pixels,
                 lambda img: to_rgb(np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB", "RGBA") else img)))


def read_label(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a single-channel label image (uint8 or uint16 ids) as an HxW array.

    A colour image where ids are expected is refused, naming the file.
    """
    return _read(Path(path), "label image", max_pixels, _label_array)


def _read(path: Path, what: str, max_pixels: int, convert: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    with _decoding(path, what, max_pixels) as img:
        try:
            return convert(img)
        except DataError as error:
            raise DataError(f"{path}: {error}") from None


def _label_array(img: Image.Image) -> np.ndarray:
    if img.mode not in ("L", "P", "I", "I;16", "1"):
        raise DataError(f"expected a single-channel label image of ids, got mode {img.mode!r} (a colour mask?)")
    array = np.asarray(img)
    if array.ndim != 2:
        raise DataError(f"expected a single-channel label image, got shape {array.shape}")
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
