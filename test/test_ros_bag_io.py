"""Bag reading (rosbag2 sqlite3/mcap, ROS 1, rosbag2 without metadata.yaml) and atomic bag writing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mgcda_ros.bag_io import COMPRESSED, IMAGE, BagError, BagWriter, open_bag, stamp_ns
from mgcda_ros.conversions import fields_to_array, message_to_rgb, rgb_to_fields

SQLITE_SAMPLE = Path("bags/rosbag2_sqlite_sample")
ROS1_SAMPLE = Path("bags/ros1_t265_sample/trimmed_locoffice.bag")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rosbag2_without_metadata_is_read_from_a_copy(shared_data: Path, tmp_path: Path):
    source = shared_data / SQLITE_SAMPLE
    # a writable copy of the user's folder: reading must neither modify the .db3 nor add files beside it
    user_bag = tmp_path / "user_bag"
    shutil.copytree(source, user_bag)
    before = {p.name: sha256(p) for p in user_bag.iterdir()}
    for path in (user_bag, user_bag / "sample.db3"):
        with open_bag(path) as bag:
            topics = bag.topics()
            assert topics["/image"] == (IMAGE, 1) and topics["/image/compressed"] == (COMPRESSED, 1)
            frames = {topic: message_to_rgb(msg) for topic, _, msg in bag.messages(["/image", "/image/compressed"])}
    assert {p.name: sha256(p) for p in user_bag.iterdir()} == before
    assert frames["/image"].shape == frames["/image/compressed"].shape == (480, 640, 3)


def test_ros1_bag_is_read(shared_data: Path):
    with open_bag(shared_data / ROS1_SAMPLE) as bag:
        messages = list(bag.messages(["/camera/fisheye1/image_raw"]))
    assert len(messages) == 3
    stamps = [stamp_ns(msg) for _, _, msg in messages]
    assert stamps == sorted(stamps) and all(msg.encoding == "mono8" for _, _, msg in messages)
    assert message_to_rgb(messages[0][2]).shape == (800, 848, 3)


def test_wrong_missing_or_empty_topic_lists_the_bags_topics(shared_data: Path):
    with open_bag(shared_data / SQLITE_SAMPLE) as bag:
        with pytest.raises(BagError, match=r"'/camera' is not in the bag(.|\n)*/image/compressed  \[sensor_msgs/msg/"
                                            r"CompressedImage, 1 msgs\]"):
            bag.require_topic("/camera", (IMAGE, COMPRESSED), "image")
        with pytest.raises(BagError, match=r"'/imu' has type sensor_msgs/msg/Imu, expected sensor_msgs/msg/Image(.|\n)*"
                                            r"/text  \[std_msgs/msg/String"):
            bag.require_topic("/imu", (IMAGE,), "image")


def test_not_a_bag_is_refused(tmp_path: Path):
    with pytest.raises(BagError, match="bag not found"):
        with open_bag(tmp_path / "nothing"):
            pass
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="is not a bag: expected"):
        with open_bag(tmp_path / "empty"):
            pass


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_written_bag_round_trips_stamps_frames_and_pixels(tmp_path: Path, storage: str):
    rgb = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", rgb[:, :, ::-1])
    assert ok
    out = tmp_path / "out_bag"
    stamps = [1_700_000_000_123_456_789, 1_700_000_000_223_456_789]
    with BagWriter(out, {"/cam/image": IMAGE, "/cam/image/compressed": COMPRESSED}, storage) as writer:
        assert not out.exists()  # appears only when complete
        for i, stamp in enumerate(stamps):
            writer.write_image("/cam/image", stamp + 5, stamp, f"frame{i}", rgb_to_fields(rgb, "bgr8"))
            writer.write_compressed("/cam/image/compressed", stamp + 5, stamp, f"frame{i}", "png", png.tobytes())
    assert out.is_dir() and [p.name for p in tmp_path.iterdir()] == ["out_bag"]
    with open_bag(out) as bag:
        read = list(bag.messages(["/cam/image", "/cam/image/compressed"]))
    assert [(topic, t) for topic, t, _ in read] == [(topic, s + 5) for s in stamps
                                                   for topic in ("/cam/image", "/cam/image/compressed")]
    for _, _, msg in read:
        assert stamp_ns(msg) in stamps and msg.header.frame_id == f"frame{stamps.index(stamp_ns(msg))}"
        np.testing.assert_array_equal(message_to_rgb(msg), rgb)
    np.testing.assert_array_equal(fields_to_array(read[0][2]), rgb[:, :, ::-1])
    with pytest.raises(BagError, match="already exists"):
        BagWriter(out, {"/x": IMAGE}, storage)


def test_aborted_bag_leaves_nothing(tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"):
        with BagWriter(tmp_path / "bag", {"/x": IMAGE}):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_demo_bag_holds_the_shipped_frames_and_masks(tmp_path: Path):
    from mgcda_core.data.eval_sets import road_anomaly
    from mgcda_ros.conversions import label_from_image
    from mgcda_ros.demo import ASSETS, GT_TOPIC, IMAGE_TOPIC, build_demo_bag

    frames = road_anomaly(ASSETS)
    assert build_demo_bag(tmp_path / "demo", ASSETS) == len(frames) >= 3
    with open_bag(tmp_path / "demo") as bag:
        assert bag.topics() == {IMAGE_TOPIC: (COMPRESSED, len(frames)), GT_TOPIC: (IMAGE, len(frames))}
        images = [m for _, _, m in bag.messages([IMAGE_TOPIC])]
        labels = [label_from_image(m) for _, _, m in bag.messages([GT_TOPIC])]
    for index, (image, label) in enumerate(zip(images, labels)):
        assert bytes(image.data) == frames.frames[index].image_path.read_bytes()  # the JPEG as shipped
        np.testing.assert_array_equal(label, frames[index].label)  # RoadAnomaly 2 -> 1
        assert set(np.unique(label)) <= {0, 1}
