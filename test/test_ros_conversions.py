"""Image/CompressedImage <-> numpy conversion, output message fields, overlay and rolling statistics."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage, Image

from mgcda_ros.conversions import (
    RejectedImage,
    bgr_to_fields,
    detect_bit_depth,
    fields_to_array,
    image_to_rgb,
    label_from_image,
    label_to_fields,
    mask_to_fields,
    mask_to_mono8,
    message_to_rgb,
    rgb_to_fields,
    score_to_fields,
)
from mgcda_ros.overlay import TINT_RGB, anomaly_mask, make_overlay
from mgcda_ros.stats import RateMeter, RollingPercentiles

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
STORE = get_typestore(Stores.ROS2_KILTED)


def rclpy_image(height, width, encoding, step, data, big=0):
    msg = Image()
    msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian = height, width, encoding, step, big
    msg.data = bytes(data)
    return msg


def rosbags_image(height, width, encoding, step, data, big=0):
    header = STORE.types["std_msgs/msg/Header"](stamp=STORE.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2),
                                                frame_id="cam")
    return STORE.types["sensor_msgs/msg/Image"](header=header, height=height, width=width, encoding=encoding,
                                                is_bigendian=big, step=step, data=np.frombuffer(bytes(data), np.uint8))


MAKERS = [rclpy_image, rosbags_image]


def encoded(encoding: str) -> np.ndarray:
    """RGB test image in ``encoding``'s channel order, computed independently of the code under test."""
    alpha = np.full(RGB.shape[:2] + (1,), 200, np.uint8)
    return {"rgb8": RGB, "bgr8": RGB[:, :, ::-1], "rgba8": np.concatenate([RGB, alpha], 2),
            "bgra8": np.concatenate([RGB[:, :, ::-1], alpha], 2)}[encoding]


@pytest.mark.parametrize("make", MAKERS)
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 3])
def test_colour_encodings_decode_to_the_same_rgb(make, encoding, padding):
    pixels = encoded(encoding)
    height, width, channels = pixels.shape
    rows = np.zeros((height, width * channels + padding), np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, -1)
    rgb = image_to_rgb(make(height, width, encoding, width * channels + padding, rows.tobytes()))
    np.testing.assert_array_equal(rgb, RGB)


@pytest.mark.parametrize("make", MAKERS)
def test_mono8_is_replicated_to_three_channels(make):
    grey = RGB[:, :, 0]
    rgb = image_to_rgb(make(6, 5, "mono8", 5, grey.tobytes()))
    np.testing.assert_array_equal(rgb, np.stack([grey] * 3, axis=2))


def scaled(values, bits: int) -> np.ndarray:
    """Independent reference: round(v * 255 / (2**bits - 1)) in exact rational arithmetic, saturated at 255."""
    top = 2**bits - 1
    return np.array([[min(255, (2 * int(v) * 255 + top) // (2 * top)) for v in row] for row in values], np.uint8)


@pytest.mark.parametrize("big", [0, 1])
def test_mono16_full_range_scaled_to_8_bits_in_either_byte_order(big):
    values = RNG.integers(0, 65536, size=(4, 3)).astype(np.uint16)
    values[0, 0] = 65535  # a 16-bit frame: its largest value needs all 16 bits
    data = values.astype(">u2" if big else "<u2").tobytes()
    rgb = image_to_rgb(rclpy_image(4, 3, "mono16", 6, data, big))
    np.testing.assert_array_equal(rgb, np.stack([scaled(values, 16)] * 3, axis=2))


@pytest.mark.parametrize("top, bits", [(0, 8), (255, 8), (256, 10), (1023, 10), (1024, 12), (4095, 12),
                                       (4096, 14), (16383, 14), (16384, 16), (65535, 16)])
def test_bit_depth_is_detected_from_the_largest_value(top, bits):
    values = np.array([[0, 1, top // 2, top]], np.uint16).reshape(2, 2)
    assert detect_bit_depth(values) == bits
    rgb = image_to_rgb(rclpy_image(2, 2, "mono16", 4, values.astype("<u2").tobytes()))
    np.testing.assert_array_equal(rgb[:, :, 0], scaled(values, bits))


def test_twelve_bit_data_uses_its_range_not_65535():
    values = np.array([[0, 1, 2048], [3000, 4094, 4095]], np.uint16)  # a 12-bit camera
    rgb = image_to_rgb(rclpy_image(2, 3, "mono16", 6, values.astype("<u2").tobytes()))
    np.testing.assert_array_equal(rgb[:, :, 0], [[0, 0, 128], [187, 255, 255]])  # by hand: round(v*255/4095)
    # a fixed bit depth overrides detection; values above its range saturate
    fixed = image_to_rgb(rclpy_image(2, 3, "mono16", 6, values.astype("<u2").tobytes()), bit_depth=10)
    np.testing.assert_array_equal(fixed[:, :, 0], [[0, 0, 255], [255, 255, 255]])


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16"])
@pytest.mark.parametrize("big", [0, 1])
def test_rgb16_and_bgr16_keep_channel_order_and_scale_by_range(encoding, big):
    values = RNG.integers(0, 1024, size=(3, 4, 3)).astype(np.uint16)  # 10-bit RGB
    values[0, 0, 0] = 1023
    pixels = values if encoding == "rgb16" else values[:, :, ::-1]
    data = np.ascontiguousarray(pixels).astype(">u2" if big else "<u2").tobytes()
    rgb = image_to_rgb(rclpy_image(3, 4, encoding, 4 * 3 * 2, data, big))
    expected = np.stack([scaled(values[:, :, c], 10) for c in range(3)], axis=2)
    np.testing.assert_array_equal(rgb, expected)


def test_generic_8uc1_and_8uc3_read_as_mono8_and_bgr8():
    grey = RGB[:, :, 0]
    np.testing.assert_array_equal(image_to_rgb(rclpy_image(6, 5, "8UC1", 5, grey.tobytes())),
                                  np.stack([grey] * 3, axis=2))
    bgr = np.ascontiguousarray(RGB[:, :, ::-1])
    np.testing.assert_array_equal(image_to_rgb(rclpy_image(6, 5, "8UC3", 15, bgr.tobytes())), RGB)


def bt601(y: int, u: int, v: int) -> tuple[float, float, float]:
    """ITU-R BT.601 video-range YUV -> RGB (the standard's coefficients), as floats."""
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    return c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_yuv422_uyvy_and_yuyv_decode_with_bt601(encoding):
    # two rows of two pixel pairs; each pair: (U, Y0, V, Y1)
    pairs = [[(90, 60, 200, 120), (160, 200, 100, 30)], [(128, 16, 128, 235), (54, 81, 34, 145)]]
    rows = []
    for row in pairs:
        data = []
        for u, y0, v, y1 in row:
            data += [u, y0, v, y1] if encoding == "yuv422" else [y0, u, y1, v]
        rows.append(data)
    msg = rclpy_image(2, 4, encoding, 8, np.array(rows, np.uint8).tobytes())
    rgb = image_to_rgb(msg).astype(float)
    for r, row in enumerate(pairs):
        for p, (u, y0, v, y1) in enumerate(row):
            for k, y in enumerate((y0, y1)):
                expected = np.clip(bt601(y, u, v), 0, 255)
                np.testing.assert_allclose(rgb[r, 2 * p + k], expected, atol=1.5)
    assert tuple(rgb[1, 0]) == (0, 0, 0) and tuple(rgb[1, 1]) == (255, 255, 255)  # video-range black and white


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_demosaic_a_uniform_colour_exactly(pattern):
    colour = {"r": 200, "g": 100, "b": 50}
    mosaic = np.zeros((8, 10), np.uint8)
    for index, channel in enumerate(pattern):  # the pattern names the top-left 2x2 block, row by row
        mosaic[index // 2::2, index % 2::2] = colour[channel]
    rgb = image_to_rgb(rclpy_image(8, 10, f"bayer_{pattern}8", 10, mosaic.tobytes()))
    interior = rgb[2:-2, 2:-2].reshape(-1, 3)
    assert (interior == (200, 100, 50)).all(), interior[:4]


def test_yuv422_with_an_odd_width_is_rejected():
    with pytest.raises(RejectedImage, match="yuv422_yuy2 image width 3 is odd"):
        image_to_rgb(rclpy_image(2, 3, "yuv422_yuy2", 6, bytes(12)))


@pytest.mark.parametrize("fields, fragment", [
    (dict(encoding="64FC1"), "unsupported encoding '64FC1': expected one of"),
    (dict(width=0), "too small"),
    (dict(height=0, width=0), "too small"),
    (dict(step=5), "step 5 is shorter than one rgb8 row"),
    (dict(data=bytes(10)), "data has 10 bytes, expected step*height"),
    (dict(height=100_000, width=100_000, step=300_000), "exceeds the limit"),
])
def test_malformed_images_are_rejected_with_a_reason(fields, fragment):
    spec = dict(height=6, width=5, encoding="rgb8", step=15, data=RGB.tobytes())
    spec.update(fields)
    with pytest.raises(RejectedImage, match=fragment.replace("*", r"\*").replace("(", r"\(")):
        image_to_rgb(rclpy_image(spec["height"], spec["width"], spec["encoding"], spec["step"], spec["data"]))


def compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage()
    msg.format, msg.data = fmt, data
    return msg


def test_png_decodes_exactly_and_jpeg_closely():
    big = cv2.resize(RGB, (40, 48), interpolation=cv2.INTER_NEAREST)
    ok, png = cv2.imencode(".png", big[:, :, ::-1])
    assert ok
    np.testing.assert_array_equal(message_to_rgb(compressed("png", png.tobytes())), big)
    smooth = np.dstack([np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (48, 1))] * 3)
    ok, jpeg = cv2.imencode(".jpg", smooth[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    decoded = message_to_rgb(compressed("bgr8; jpeg compressed bgr8", jpeg.tobytes()))
    assert decoded.shape == smooth.shape and np.abs(decoded.astype(int) - smooth).mean() < 3


@pytest.mark.parametrize("fmt, data, fragment", [
    ("jpeg", b"", "no data"),
    ("jpeg", b"\x00\x01garbage", "signature"),
    ("jpeg", b"\xff\xd8" + bytes(range(200)), "undecodable jpeg"),
    ("tiff", b"II*\x00", "unsupported compressed format"),
])
def test_bad_compressed_images_are_rejected(fmt, data, fragment):
    with pytest.raises(RejectedImage, match=fragment):
        message_to_rgb(compressed(fmt, data))


def test_compressed_image_claiming_an_absurd_size_is_refused_before_decoding():
    ok, png = cv2.imencode(".png", np.zeros((64, 64), np.uint8))
    assert ok
    with pytest.raises(RejectedImage, match="64x64 exceeds the limit of 1000 pixels"):
        message_to_rgb(compressed("png", png.tobytes()), max_pixels=1000)


def test_output_fields_round_trip_and_encode_the_contract():
    score = RNG.random((6, 5), dtype=np.float32)
    mask = anomaly_mask(score, 0.5)
    mask_fields = mask_to_fields(mask)
    assert (mask_fields.encoding, mask_fields.step) == ("mono8", 5)
    np.testing.assert_array_equal(fields_to_array(mask_fields), np.where(score >= 0.5, 255, 0))
    score_fields = score_to_fields(score)
    assert (score_fields.encoding, score_fields.step, score_fields.is_bigendian) == ("32FC1", 20, 0)
    np.testing.assert_array_equal(fields_to_array(score_fields), score)
    np.testing.assert_array_equal(fields_to_array(bgr_to_fields(RGB[:, :, ::-1].copy())), RGB[:, :, ::-1])
    for encoding in ("rgb8", "bgr8"):
        fields = rgb_to_fields(RGB, encoding)
        back = image_to_rgb(rclpy_image(fields.height, fields.width, fields.encoding, fields.step, fields.data))
        np.testing.assert_array_equal(back, RGB)


def test_label_from_image_requires_mono8():
    labels = RNG.choice(np.array([0, 1, 255], np.uint8), size=(6, 5))
    np.testing.assert_array_equal(label_from_image(rosbags_image(6, 5, "mono8", 5, labels.tobytes())), labels)
    fields = label_to_fields(labels)  # the writing side: values kept as they are (0, 1, 255)
    assert (fields.encoding, fields.step) == ("mono8", 5)
    np.testing.assert_array_equal(label_from_image(rosbags_image(*fields[:2], "mono8", 5, fields.data.tobytes())),
                                  labels)
    with pytest.raises(ValueError, match="HxW uint8 ground-truth mask"):
        label_to_fields(labels.astype(np.int64))
    with pytest.raises(RejectedImage, match="expected mono8"):
        label_from_image(rosbags_image(6, 5, "rgb8", 15, RGB.tobytes()))


def test_overlay_tints_only_anomalous_pixels():
    mask = RNG.random((6, 5)) > 0.5
    out = make_overlay(RGB, mask, 0.25)
    expected = RGB.astype(np.float64)
    expected[mask] = 0.75 * expected[mask] + 0.25 * np.array(TINT_RGB)
    # equation within rounding (OpenCV computes in float32); untouched pixels exactly equal
    assert np.abs(out.astype(int) - np.rint(expected)[:, :, ::-1]).max() <= 1
    np.testing.assert_array_equal(out[~mask], RGB[~mask][:, ::-1])
    with pytest.raises(ValueError, match="alpha"):
        make_overlay(RGB, mask, 1.5)


def test_overlay_and_mask_written_in_place_into_given_buffers():
    rgb = RNG.integers(0, 256, size=(12, 7, 3), dtype=np.uint8)
    mask = np.zeros((12, 7), bool)
    mask[4:7] = RNG.random((3, 7)) > 0.4  # anomalies only in rows 4-6
    expected = rgb.astype(np.float64)
    expected[mask] = 0.6 * expected[mask] + 0.4 * np.array(TINT_RGB)
    out = np.full_like(rgb, 77)  # stale content must be overwritten everywhere
    assert make_overlay(rgb, mask, 0.4, out=out) is out
    assert np.abs(out.astype(int) - np.rint(expected)[:, :, ::-1]).max() <= 1
    np.testing.assert_array_equal(out[~mask], rgb[~mask][:, ::-1])
    np.testing.assert_array_equal(make_overlay(rgb, np.zeros_like(mask), 0.4), rgb[:, :, ::-1])
    with pytest.raises(ValueError, match="out must be a C-contiguous uint8 array of shape"):
        make_overlay(rgb, mask, 0.4, out=np.zeros((12, 7, 3), np.float32))
    mono = np.full((12, 7), 9, np.uint8)
    assert mask_to_mono8(mask, out=mono) is mono
    np.testing.assert_array_equal(mono, np.where(mask, 255, 0))
    with pytest.raises(ValueError, match="out must be a uint8 array of shape"):
        mask_to_mono8(mask, out=np.zeros((7, 12), np.uint8))


def test_rolling_percentiles_and_rate():
    window = RollingPercentiles(size=50)
    assert np.isnan(window.percentiles(50)[0])
    values = RNG.random(80)
    for value in values:
        window.add(float(value))
    np.testing.assert_allclose(window.percentiles(50, 95), np.percentile(values[-50:], [50, 95]))
    meter = RateMeter(window_s=2.0)
    for t in np.arange(0.0, 10.0, 0.1):
        meter.tick(float(t))
    assert meter.rate(9.95) == pytest.approx(20 / 2.0, abs=0.5)
    assert meter.rate(100.0) == 0.0
