"""sensor_msgs/Image and CompressedImage <-> numpy, with strict validation.

Works on rclpy messages and on ``rosbags`` messages alike (both expose the same field names). The raw encodings
are those cv_bridge reads (names from sensor_msgs/image_encodings.hpp); colour conversion is OpenCV's
``cvtColor``, vectorised. The byte layout (step, padding, endianness, sizes) is validated here first. Every
refusal raises :class:`RejectedImage` saying what is wrong and what was expected, so the node can count it and
keep running.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np
from rosbags.image.image import convert_color

from mgcda_core.errors import DataError, shorten
from mgcda_core.utils.images import DEFAULT_MAX_PIXELS, HARD_MAX_PIXELS

#: encoding -> (samples per pixel in the message, numpy dtype, cv2.cvtColor code to RGB or None when it is RGB).
#: 8UC1/8UC3 carry no colour order: read as mono8/bgr8, OpenCV's order (cv_bridge writes a cv::Mat so).
#: yuv422 is UYVY and yuv422_yuy2 is YUYV, 2 bytes a pixel (BT.601 in OpenCV). A ROS bayer_<pattern> names the
#: first 2x2 block; OpenCV names its Bayer codes by the second row's pixels 2 and 3 (so rggb is OpenCV's BG).
ENCODINGS: dict[str, tuple[int, str, int | None]] = {
    "rgb8": (3, "u1", None),
    "bgr8": (3, "u1", cv2.COLOR_BGR2RGB),
    "rgba8": (4, "u1", cv2.COLOR_RGBA2RGB),
    "bgra8": (4, "u1", cv2.COLOR_BGRA2RGB),
    "mono8": (1, "u1", cv2.COLOR_GRAY2RGB),
    "8UC1": (1, "u1", cv2.COLOR_GRAY2RGB),
    "8UC3": (3, "u1", cv2.COLOR_BGR2RGB),
    "mono16": (1, "u2", cv2.COLOR_GRAY2RGB),
    "rgb16": (3, "u2", None),
    "bgr16": (3, "u2", cv2.COLOR_BGR2RGB),
    "yuv422": (2, "u1", cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, "u1", cv2.COLOR_YUV2RGB_YUY2),
    "bayer_rggb8": (1, "u1", cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, "u1", cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, "u1", cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, "u1", cv2.COLOR_BayerGB2RGB),
}
#: encodings :func:`rgb_to_fields` writes (tests, bag writing).
WRITABLE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
#: the bit depths a 16-bit encoding is detected as, from its largest value
DETECTED_BIT_DEPTHS = (8, 10, 12, 14, 16)
#: compressed formats accepted; ``format`` strings look like "jpeg", "png", "rgb8; jpeg compressed bgr8".
COMPRESSED_MAGIC: dict[str, bytes] = {"jpeg": b"\xff\xd8", "png": b"\x89PNG\r\n\x1a\n"}
MIN_SIDE = 2
#: JPEG frame header (SOF) markers: 0xC0..0xCF except DHT (C4), JPG (C8) and DAC (CC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length field: TEM and RST0..RST7
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: compressed bytes per pixel at most: 16-bit RGBA PNG stored uncompressed (8) plus a margin for its framing
_COMPRESSED_BYTES_PER_PIXEL = 9


class RejectedImage(DataError):
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
    if not 0 < max_pixels <= HARD_MAX_PIXELS:
        raise ValueError(f"max_pixels must lie in 1..{HARD_MAX_PIXELS}, got {max_pixels}")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise RejectedImage(f"image size {width}x{height} is too small: expected at least {MIN_SIDE}x{MIN_SIDE}")
    if width * height > max_pixels:
        raise RejectedImage(f"image size {width}x{height} exceeds the limit of {max_pixels} pixels")


def check_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Validate a sensor_msgs/Image's layout without touching its pixels (O(1); safe in a callback)."""
    encoding = msg.encoding
    if encoding not in ENCODINGS:
        raise RejectedImage(f"unsupported encoding {shorten(encoding)}: expected one of {sorted(ENCODINGS)}")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels)
    channels, dtype, _ = ENCODINGS[encoding]
    if channels == 2 and width % 2:
        raise RejectedImage(f"{encoding} image width {width} is odd: expected an even width (two pixels share "
                            "their chroma)")
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise RejectedImage(f"step {step} is shorter than one {encoding} row of width {width} ({row_bytes} bytes)")
    if len(msg.data) < step * height:
        raise RejectedImage(f"data has {len(msg.data)} bytes, expected step*height = {step}*{height} = {step * height}")


def detect_bit_depth(pixels: np.ndarray) -> int:
    """The smallest of :data:`DETECTED_BIT_DEPTHS` that holds the largest value (a 12-bit camera's 0..4095)."""
    top = int(pixels.max())
    return next((bits for bits in DETECTED_BIT_DEPTHS if top < 1 << bits), DETECTED_BIT_DEPTHS[-1])


def scale_to_8_bits(pixels: np.ndarray, bit_depth: int = 0) -> np.ndarray:
    """uint16 samples of ``bit_depth`` significant bits (0: :func:`detect_bit_depth`) to uint8: round(v * 255 /
    (2**bits - 1)), values above the range saturate at 255."""
    bits = bit_depth or detect_bit_depth(pixels)
    return cv2.convertScaleAbs(pixels, alpha=255.0 / ((1 << bits) - 1))


def image_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS, bit_depth: int = 0) -> np.ndarray:
    """Decode a sensor_msgs/Image into an HxWx3 uint8 RGB array (row padding and endianness honoured).

    16-bit encodings are scaled by their real range: ``bit_depth`` significant bits, or detected from the
    frame's largest value when 0 (see :func:`scale_to_8_bits`); alpha is dropped.
    """
    check_image(msg, max_pixels)
    channels, dtype, code = ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    rows = raw[:, : width * channels * itemsize]
    if itemsize > 1:
        native = np.ascontiguousarray(rows).view((">" if msg.is_bigendian else "<") + dtype).astype(dtype)
        rows = scale_to_8_bits(native, bit_depth)
    pixels = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if code is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def check_compressed(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Validate a sensor_msgs/CompressedImage's format, signature and the (width, height) its header declares
    against ``max_pixels``, without decoding it (cost: walking the JPEG segment headers, or reading the PNG
    IHDR); returns that size."""
    kind = compressed_kind(msg.format)
    data = _bytes_view(msg.data)
    if len(data) == 0:
        raise RejectedImage("compressed image has no data")
    max_bytes = max_pixels * _COMPRESSED_BYTES_PER_PIXEL + 65536
    if len(data) > max_bytes:
        raise RejectedImage(f"compressed image of {len(data)} bytes exceeds the limit of {max_bytes} bytes "
                            f"(max_input_pixels {max_pixels})")
    magic = COMPRESSED_MAGIC[kind]
    if bytes(data[: len(magic)]) != magic:
        raise RejectedImage(f"data does not start with the {kind} signature {magic!r} (format "
                            f"{shorten(msg.format)})")
    width, height = _jpeg_size(data) if kind == "jpeg" else _png_size(data)
    _check_size(width, height, max_pixels)
    return width, height


def _bytes_view(data: Any) -> memoryview:
    """The message's bytes without a copy where possible (rclpy: array.array or bytes; rosbags: a numpy array);
    indexing it gives Python ints, so header arithmetic cannot overflow a uint8."""
    try:
        return memoryview(data).cast("B")
    except (TypeError, ValueError):  # a list of ints, or a non-contiguous array
        return memoryview(bytes(data))


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from the first frame header (SOF) of JPEG ``data``, walking the segments' lengths only."""
    position, end = 2, len(data)
    while position + 4 <= end:
        if data[position] != 0xFF:
            raise RejectedImage(f"undecodable jpeg data ({end} bytes): no marker at byte {position}")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            break
        length = data[position + 2] << 8 | data[position + 3]
        if length < 2:
            raise RejectedImage(f"undecodable jpeg data ({end} bytes): segment length {length} at byte {position}")
        if marker in _JPEG_SOF:
            if length < 7 or position + 9 > end:
                break
            height = data[position + 5] << 8 | data[position + 6]
            width = data[position + 7] << 8 | data[position + 8]
            return width, height
        position += 2 + length
    raise RejectedImage(f"undecodable jpeg data ({end} bytes): no frame header (SOF) declaring its size")


def _png_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which a PNG must start with."""
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        raise RejectedImage(f"undecodable png data ({len(data)} bytes): no IHDR header declaring its size")
    header = bytes(data[16:24])
    return int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")


def compressed_kind(fmt: str) -> str:
    """Map a CompressedImage ``format`` string to "jpeg" or "png" (image_transport writes e.g. "bgr8; jpeg compressed bgr8")."""
    lowered = fmt.lower()
    found = [kind for kind in COMPRESSED_MAGIC if kind in lowered or (kind == "jpeg" and "jpg" in lowered)]
    if len(found) != 1:
        raise RejectedImage(f"unsupported compressed format {shorten(fmt)}: expected JPEG or PNG")
    return found[0]


def compressed_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG sensor_msgs/CompressedImage into an HxWx3 uint8 RGB array; the size its header declares
    is checked first (:func:`check_compressed`): a few bytes can claim a huge image."""
    width, height = check_compressed(msg, max_pixels)
    kind = compressed_kind(msg.format)
    # IMREAD_COLOR: grey, 16-bit and alpha images all come back as 8-bit BGR.
    bgr = cv2.imdecode(np.frombuffer(_bytes_view(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RejectedImage(f"undecodable {kind} data ({len(msg.data)} bytes)")
    if bgr.shape[:2] not in ((height, width), (width, height)):  # transposed: EXIF orientation applied
        raise RejectedImage(f"{kind} data decoded to {bgr.shape[1]}x{bgr.shape[0]}, not the {width}x{height} its "
                            "header declares (the decoder read another header than the one checked)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS, bit_depth: int = 0) -> np.ndarray:
    """Image or CompressedImage (told apart by the ``format`` field) to HxWx3 uint8 RGB; ``bit_depth`` as in
    :func:`image_to_rgb`."""
    if hasattr(msg, "format"):
        return compressed_to_rgb(msg, max_pixels)
    return image_to_rgb(msg, max_pixels, bit_depth)


def label_from_image(msg: Any) -> np.ndarray:
    """A ground-truth mask (mono8 or 8UC1: 0 normal, 1 anomaly, 255 ignore) as an HxW uint8 array."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise RejectedImage(f"ground-truth mask has encoding {shorten(msg.encoding)}: expected mono8 (0 normal, 1 anomaly, "
                            "255 ignore)")
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, DEFAULT_MAX_PIXELS)
    if step < width or len(msg.data) < step * height:
        raise RejectedImage(f"ground-truth mask {width}x{height}: step {step} and {len(msg.data)} data bytes do not "
                            f"hold step*height bytes with step >= width")
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=step * height).reshape(height, step)
    return np.ascontiguousarray(raw[:, :width])


def rgb_to_fields(rgb: np.ndarray, encoding: str = "rgb8") -> ImageFields:
    """HxWx3 uint8 RGB to Image fields in ``encoding`` (any of :data:`WRITABLE_ENCODINGS`)."""
    if encoding not in WRITABLE_ENCODINGS:
        raise ValueError(f"cannot write encoding {encoding!r}: expected one of {', '.join(WRITABLE_ENCODINGS)}")
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
