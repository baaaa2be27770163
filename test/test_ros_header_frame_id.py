"""The benchmark reads frame_id from raw CDR bytes in place; rclpy's own serializer is the reference."""

from __future__ import annotations

import pytest
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CompressedImage, Image

from mgcda_ros.ros_process import header_frame_id


@pytest.mark.parametrize("frame_id", ["", "a", "bench17", "camera_front_optical", "ü-frame"])
@pytest.mark.parametrize("msg_type", [Image, CompressedImage])
def test_frame_id_from_raw_bytes_matches_the_message(frame_id: str, msg_type: type) -> None:
    msg = msg_type()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 123
    msg.data = bytes(range(256)) * 3
    assert header_frame_id(serialize_message(msg)) == frame_id
    assert header_frame_id(msg) == frame_id


def test_bytes_that_are_not_cdr_are_refused() -> None:
    with pytest.raises(ValueError, match="not a plain CDR message"):
        header_frame_id(b"\x01\x02" + bytes(20))
    with pytest.raises(ValueError, match="does not fit"):
        header_frame_id(b"\x00\x01\x00\x00" + bytes(8) + (1000).to_bytes(4, "little") + b"abc")
