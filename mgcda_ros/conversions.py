"""sensor_msgs/Image and CompressedImage <-> numpy, with strict validation.

Works on rclpy messages and on ``rosbags`` messages alike (both expose the same field names). Colour conversion
is ``rosbags.image.convert_color``; the byte layout (step, padding, endianness, sizes) is validated here first,
because ``rosbags-image`` trusts it. Every refusal raises :class:`RejectedImage` saying what is wrong and what was
expected, so the node can count it and keep running.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import cv2
import numpy as np
from PIL import Image as PILImage
from rosbags.image.image import convert_color

#: encoding -> (channels, numpy dtype) of the raw encodings the node accepts (docs/ROS.md).
SUPPORTED_ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "u1"),
    "bgr8": (3, "u1"),
    "rgba8": (4, "u1"),
    "bgra8": (4, "u1"),
    "mono8": (1, "u1"),
    "mono16": (1, "u2"),
}
#: compressed formats accepted; ``format`` strings look like "jpeg", "png", "rgb8; jpeg compressed bgr8".
COMPRESSED_MAGIC: dict[str, bytes] = {"jpeg": b"\xff\xd8", "png": b"\x89PNG\r\n\x1a\n"}
#: default largest accepted image (pixels): 8K UHD with margin; anything bigger is an absurd size for a camera.
DEFAULT_MAX_PIXELS = 8192 * 8192
MIN_SIDE = 2


class RejectedImage(ValueError):
    """An input message that cannot be turned into an image; the message says why."""


class ImageFields(NamedTuple):
    """The payload fields of a sensor_msgs/Image, ready to copy into an rclpy or rosbags message."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: np.ndarray  # flat uint8


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise RejectedImage(f"image size {width}x{height} is too small: expected at least {MIN_SIDE}x{MIN_SIDE}")
    if width * height > max_pixels:
        raise RejectedImage(f"image size {width}x{height} exceeds the limit of {max_pixels} pixels")


def check_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Validate a sensor_msgs/Image's layout without touching its pixels (O(1); safe in a callback)."""
    encoding = msg.encoding
    if encoding not in SUPPORTED_ENCODINGS:
        raise RejectedImage(f"unsupported encoding {encoding!r}: expected one of {sorted(SUPPORTED_ENCODINGS)}")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels)
    channels, dtype = SUPPORTED_ENCODINGS[encoding]
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise RejectedImage(f"step {step} is shorter than one {encoding} row of width {width} ({row_bytes} bytes)")
    if len(msg.data) < step * height:
        raise RejectedImage(f"data has {len(msg.data)} bytes, expected step*height = {step}*{height} = {step * height}")


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/Image into an HxWx3 uint8 RGB array (row padding and endianness honoured).

    mono16 is scaled to 8 bits by 255/65535 (``rosbags.image`` convention); alpha is dropped.
    """
    check_image(msg, max_pixels)
    channels, dtype = SUPPORTED_ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    rows = raw[:, : width * channels * itemsize]
    if itemsize > 1:
        rows = np.ascontiguousarray(rows).view((">" if msg.is_bigendian else "<") + dtype).astype(dtype)
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    return np.ascontiguousarray(convert_color(np.ascontiguousarray(pixels), msg.encoding, "rgb8"))


def check_compressed(msg: Any, max_bytes: int = DEFAULT_MAX_PIXELS * 3) -> None:
    """Validate a sensor_msgs/CompressedImage's format and magic bytes without decoding it."""
    kind = compressed_kind(msg.format)
    data = msg.data
    if len(data) == 0:
        raise RejectedImage("compressed image has no data")
    if len(data) > max_bytes:
        raise RejectedImage(f"compressed image of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    magic = COMPRESSED_MAGIC[kind]
    if bytes(data[: len(magic)]) != magic:
        raise RejectedImage(f"data does not start with the {kind} signature {magic!r} (format {msg.format!r})")


def compressed_kind(fmt: str) -> str:
    """Map a CompressedImage ``format`` string to "jpeg" or "png" (image_transport writes e.g. "bgr8; jpeg compressed bgr8")."""
    lowered = fmt.lower()
    found = [kind for kind in COMPRESSED_MAGIC if kind in lowered or (kind == "jpeg" and "jpg" in lowered)]
    if len(found) != 1:
        raise RejectedImage(f"unsupported compressed format {fmt!r}: expected JPEG or PNG")
    return found[0]


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG sensor_msgs/CompressedImage into an HxWx3 uint8 RGB array."""
    check_compressed(msg)
    kind = compressed_kind(msg.format)
    # the header's size first: a few bytes can claim a huge image (decompression bomb)
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as header:
            width, height = header.size
    except (OSError, ValueError, PILImage.DecompressionBombError) as err:
        raise RejectedImage(f"undecodable {kind} data ({len(msg.data)} bytes): {err}") from None
    _check_size(width, height, max_pixels)
    # IMREAD_COLOR: grey, 16-bit and alpha images all come back as 8-bit BGR.
    bgr = cv2.imdecode(np.frombuffer(msg.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RejectedImage(f"undecodable {kind} data ({len(msg.data)} bytes)")
    return np.ascontiguousarray(convert_color(bgr, "bgr8", "rgb8"))


def message_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image or CompressedImage (told apart by the ``format`` field) to HxWx3 uint8 RGB."""
    return compressed_to_rgb(msg, max_pixels) if hasattr(msg, "format") else image_to_rgb(msg, max_pixels)


def label_from_image(msg: Any) -> np.ndarray:
    """A ground-truth mask (mono8 or 8UC1: 0 normal, 1 anomaly, 255 ignore) as an HxW uint8 array."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise RejectedImage(f"ground-truth mask has encoding {msg.encoding!r}: expected mono8 (0 normal, 1 anomaly, "
                            "255 ignore)")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, DEFAULT_MAX_PIXELS)
    if step < width or len(msg.data) < step * height:
        raise RejectedImage(f"ground-truth mask {width}x{height}: step {step} and {len(msg.data)} data bytes do not "
                            f"hold step*height bytes with step >= width")
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    return np.ascontiguousarray(raw[:, :width])


def rgb_to_fields(rgb: np.ndarray, encoding: str = "rgb8") -> ImageFields:
    """HxWx3 uint8 RGB to Image fields in ``encoding`` (any of :data:`SUPPORTED_ENCODINGS`)."""
    if encoding not in SUPPORTED_ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}: expected one of {sorted(SUPPORTED_ENCODINGS)}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    pixels = np.ascontiguousarray(convert_color(rgb, "rgb8", encoding))
    height, width = rgb.shape[:2]
    big = int(pixels.dtype.byteorder == ">")
    return ImageFields(height, width, encoding, big, pixels.nbytes // height, pixels.reshape(-1).view(np.uint8))


def mask_to_mono8(mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Boolean HxW anomaly mask to mono8 pixels: 0 normal, 255 anomaly (into ``out``, HxW uint8, when given)."""
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"expected an HxW bool mask, got {mask.dtype} {mask.shape}")
    if out is not None and (out.shape != mask.shape or out.dtype != np.uint8):
        raise ValueError(f"out must be a uint8 array of shape {mask.shape}, got {out.dtype} {out.shape}")
    return np.multiply(mask, np.uint8(255), out=out, dtype=np.uint8)


def mask_to_fields(mask: np.ndarray) -> ImageFields:
    """Boolean HxW anomaly mask to mono8 fields: 0 normal, 255 anomaly."""
    data = mask_to_mono8(mask)
    return ImageFields(mask.shape[0], mask.shape[1], "mono8", 0, mask.shape[1], data.reshape(-1))


def label_to_fields(label: np.ndarray) -> ImageFields:
    """HxW uint8 ground-truth mask (0 normal, 1 anomaly, 255 ignore) to mono8 fields; inverse of
    :func:`label_from_image`."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"expected an HxW uint8 ground-truth mask, got {label.dtype} {label.shape}")
    return ImageFields(label.shape[0], label.shape[1], "mono8", 0, label.shape[1], label.reshape(-1))


def score_to_fields(score: np.ndarray) -> ImageFields:
    """float32 HxW score in [0, 1] to 32FC1 fields (little endian)."""
    if score.dtype != np.float32 or score.ndim != 2:
        raise ValueError(f"expected an HxW float32 score, got {score.dtype} {score.shape}")
    data = np.ascontiguousarray(score, dtype="<f4").reshape(-1).view(np.uint8)
    return ImageFields(score.shape[0], score.shape[1], "32FC1", 0, score.shape[1] * 4, data)


def bgr_to_fields(bgr: np.ndarray) -> ImageFields:
    """HxWx3 uint8 BGR (an overlay) to bgr8 fields."""
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 BGR image, got {bgr.dtype} {bgr.shape}")
    data = np.ascontiguousarray(bgr).reshape(-1)
    return ImageFields(bgr.shape[0], bgr.shape[1], "bgr8", 0, bgr.shape[1] * 3, data)


def fields_to_array(fields: ImageFields | Any) -> np.ndarray:
    """Inverse of the ``*_to_fields`` builders for mono8 / 32FC1 / bgr8 (tests, replay read-back)."""
    layouts = {"mono8": ("u1", 1), "32FC1": ("f4", 1), "bgr8": ("u1", 3), "rgb8": ("u1", 3)}
    if fields.encoding not in layouts:
        raise ValueError(f"cannot read back encoding {fields.encoding!r}: expected one of {sorted(layouts)}")
    dtype, channels = layouts[fields.encoding]
    dtype = (">" if fields.is_bigendian else "<") + dtype
    height, width, step = int(fields.height), int(fields.width), int(fields.step)
    raw = np.frombuffer(fields.data, dtype=np.uint8, count=step * height).reshape(height, step)
    row = np.ascontiguousarray(raw[:, : width * channels * np.dtype(dtype).itemsize]).view(dtype)
    return row.reshape(height, width, channels) if channels > 1 else row.reshape(height, width)
