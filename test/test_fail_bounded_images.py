"""Image messages are checked against ``max_input_pixels`` from their header, before any decoding: a few hundred
bytes declaring a huge JPEG or PNG cost nothing; the sender's text (encoding, format) is quoted shortened."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from mgcda_core.errors import DataError
from mgcda_core.utils.images import DEFAULT_MAX_PIXELS, HARD_MAX_PIXELS
from mgcda_ros import conversions
from mgcda_ros.conversions import RejectedImage, check_compressed, check_image, message_to_rgb
from mgcda_ros.params import NodeParams, ParameterError

STORE = get_typestore(Stores.ROS2_KILTED)


def jpeg_declaring(width: int, height: int, progressive: bool = False) -> bytes:
    """A real 16x8 JPEG whose frame header (SOF0, or SOF2 when progressive) is rewritten to declare
    ``width`` x ``height``: what a decoder would allocate, from under a kilobyte."""
    flags = [cv2.IMWRITE_JPEG_QUALITY, 50, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    ok, encoded = cv2.imencode(".jpg", np.full((8, 16, 3), 128, np.uint8), flags)
    assert ok
    data = bytearray(encoded.tobytes())
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` (its one IDAT holds a single row)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * 16)))
            + chunk(b"IEND", b""))


def compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage()
    msg.format, msg.data = fmt, data
    return msg


def test_defaults_fit_cameras_under_a_hard_ceiling() -> None:
    assert (DEFAULT_MAX_PIXELS, HARD_MAX_PIXELS) == (4096 * 4096, 8192 * 8192)
    assert NodeParams().max_input_pixels == DEFAULT_MAX_PIXELS
    assert NodeParams(max_input_pixels=HARD_MAX_PIXELS).max_input_pixels == HARD_MAX_PIXELS
    with pytest.raises(ParameterError) as caught:
        NodeParams(max_input_pixels=HARD_MAX_PIXELS + 1)
    assert str(caught.value) == ("parameter 'max_input_pixels' = 67108865 is invalid: expected a number in "
                                 "[4, 67108864] (67108864 = 8192 x 8192 is a hard ceiling: a frame costs the node "
                                 "tens of bytes a pixel)")


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_of_under_a_kilobyte_declaring_65500x1000_is_refused_from_its_header(
        progressive: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    data = jpeg_declaring(65500, 1000, progressive)
    assert len(data) < 1000
    # decoding it (measured: 1.2 s and +377 MB) must never start
    monkeypatch.setattr(conversions.cv2, "imdecode", lambda *_: pytest.fail("the image was decoded"))
    start = time.perf_counter()
    with pytest.raises(RejectedImage) as caught:
        message_to_rgb(compressed("jpeg", data))
    assert str(caught.value) == "image size 65500x1000 exceeds the limit of 16777216 pixels"
    assert time.perf_counter() - start < 0.5


def test_the_header_size_is_read_past_large_app_segments_and_from_numpy_payloads() -> None:
    data = jpeg_declaring(300, 200)
    app1 = b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533)  # an EXIF-sized segment before the frame header
    padded = data[:2] + app1 * 3 + data[2:]
    assert check_compressed(compressed("jpeg", padded)) == (300, 200)
    # rosbags messages carry numpy uint8 arrays: header arithmetic must not wrap at 255
    bag_msg = STORE.types["sensor_msgs/msg/CompressedImage"](
        header=STORE.types["std_msgs/msg/Header"](stamp=STORE.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0),
                                                  frame_id=""),
        format="jpeg", data=np.frombuffer(jpeg_declaring(65500, 1000), np.uint8))
    with pytest.raises(RejectedImage, match="65500x1000 exceeds"):
        check_compressed(bag_msg)


def test_a_png_declaring_a_huge_size_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversions.cv2, "imdecode", lambda *_: pytest.fail("the image was decoded"))
    with pytest.raises(RejectedImage, match="^image size 30000x30000 exceeds the limit of 16777216 pixels$"):
        message_to_rgb(compressed("png", png_declaring(30000, 30000)))
    with pytest.raises(RejectedImage, match="30000x30000 exceeds the limit of 67108864"):
        message_to_rgb(compressed("png", png_declaring(30000, 30000)), max_pixels=HARD_MAX_PIXELS)
    with pytest.raises(ValueError, match="max_pixels must lie in 1..67108864"):
        message_to_rgb(compressed("png", png_declaring(16, 1)), max_pixels=HARD_MAX_PIXELS + 1)


@pytest.mark.parametrize(("fmt", "data", "expected"), [
    ("jpeg", b"\xff\xd8\xff\xd9", "undecodable jpeg data (4 bytes): no frame header (SOF) declaring its size"),
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x01rest", "undecodable jpeg data (10 bytes): segment length 1 at byte 2"),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00", "undecodable png data (10 bytes): no IHDR header declaring its size"),
])
def test_headers_without_a_size_are_refused(fmt: str, data: bytes, expected: str) -> None:
    with pytest.raises(RejectedImage) as caught:
        check_compressed(compressed(fmt, data))
    assert str(caught.value) == expected


def test_a_raw_image_header_is_checked_without_its_pixels() -> None:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step = 8192, 8192, "rgb8", 8192 * 3
    msg.data = bytes(16)  # the header is judged first: a short payload is never read
    with pytest.raises(RejectedImage, match="^image size 8192x8192 exceeds the limit of 16777216 pixels$"):
        check_image(msg, DEFAULT_MAX_PIXELS)


def test_sender_text_is_quoted_shortened() -> None:
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step, msg.data = 2, 2, "x" * 10_000, 6, bytes(12)
    with pytest.raises(RejectedImage) as raw:
        check_image(msg)
    with pytest.raises(RejectedImage) as fmt:
        check_compressed(compressed("y" * 10_000, b"\xff\xd8"))
    with pytest.raises(RejectedImage) as magic:
        check_compressed(compressed("jpeg" + "z" * 10_000, b"\x00\x00"))
    for caught in (raw, fmt, magic):
        assert isinstance(caught.value, DataError) and len(str(caught.value)) < 500
        assert "(10002 characters)" in str(caught.value) or "(10006 characters)" in str(caught.value)
