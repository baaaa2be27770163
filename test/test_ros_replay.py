"""Rosbag replay: metrics identical to ``mgcda_core.evaluate`` on the same frames, output bags, the real bags."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from mgcda_core import evaluate
from mgcda_core.data.eval_sets import road_anomaly
from mgcda_ros import replay
from mgcda_ros.bag_io import open_bag, stamp_ns
from mgcda_ros.conversions import fields_to_array
from mgcda_ros.model_loading import load_detector
from mgcda_ros.params import NodeParams

PARAMS = NodeParams(input_width=128, input_height=64, score="msp", threshold=0.3)  # backend auto: onnxruntime
# mgcda_core.evaluate runs torch: the equality test uses the same backend (runtimes differ in float rounding)
TORCH_PARAMS = dataclasses.replace(PARAMS, backend="torch")
STORE = get_typestore(Stores.ROS2_KILTED)
OUTPUTS = ("/anomaly_mask", "/anomaly_score", "/anomaly_overlay")


@pytest.fixture(scope="module")
def detector():
    return load_detector(PARAMS)


@pytest.fixture(scope="module")
def torch_detector():
    return load_detector(TORCH_PARAMS)


def ros_image(stamp: int, frame_id: str, pixels: np.ndarray, encoding: str):
    types = STORE.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return types["sensor_msgs/msg/Image"](header=header, height=pixels.shape[0], width=pixels.shape[1],
                                          encoding=encoding, is_bigendian=0, step=pixels.shape[1] * channels,
                                          data=np.ascontiguousarray(pixels).reshape(-1))


@pytest.fixture(scope="module")
def dev_bag(shared_data: Path, tmp_path_factory) -> tuple[Path, list[int]]:
    """Two RoadAnomaly frames with masks (frame 0's mask recorded before its image, frame 1's after) and a third
    frame without a mask, written with the rosbags writer directly."""
    samples = road_anomaly(shared_data / "road_anomaly_dev")
    bag = tmp_path_factory.mktemp("dev") / "road_anomaly_bag"
    stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(3)]
    with Writer(bag, version=9) as writer:
        image = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=STORE)
        gt = writer.add_connection("/cam/gt", "sensor_msgs/msg/Image", typestore=STORE)
        for i, stamp in enumerate(stamps):
            sample = samples[i]
            label_msg = ros_image(stamp, "cam", sample.label, "mono8")
            image_msg = ros_image(stamp, "cam", sample.image, "rgb8")
            if i == 0:
                writer.write(gt, stamp, STORE.serialize_cdr(label_msg, label_msg.__msgtype__))
            writer.write(image, stamp + 1, STORE.serialize_cdr(image_msg, image_msg.__msgtype__))
            if i == 1:
                writer.write(gt, stamp + 2, STORE.serialize_cdr(label_msg, label_msg.__msgtype__))
    return bag, stamps


def read_outputs(bag: Path) -> dict[str, list]:
    with open_bag(bag) as reader:
        out: dict[str, list] = {topic: [] for topic in OUTPUTS}
        for topic, timestamp, msg in reader.messages(list(OUTPUTS)):
            out[topic].append((timestamp, msg))
    return out


def test_replay_metrics_equal_evaluate_on_the_same_frames(shared_data, dev_bag, torch_detector, tmp_path):
    bag, stamps = dev_bag
    config = replay.ReplayConfig(bag=bag, image_topic="/cam/image", gt_topic="/cam/gt", out=tmp_path / "replay",
                                 params=TORCH_PARAMS, write_bag=tmp_path / "out_bag", gallery=1, progress=False)
    summary = replay.replay(config, torch_detector)
    assert (summary["frames"], summary["frames_with_gt"]) == (3, 2)
    code = evaluate.main(["--dataset", "road_anomaly", "--root", str(shared_data / "road_anomaly_dev"),
                          "--score", "msp", "--input-size", "64", "128", "--limit", "2", "--gallery", "1",
                          "--out", str(tmp_path / "evaluate")])
    assert code == 0
    ours = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    reference = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())
    for key in ("num_images", "num_pixels", "protocol"):
        assert ours[key] == reference[key]
    for key in ("AP", "FPR95", "AUROC"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-9)
    assert (tmp_path / "replay" / "pr_curve.png").is_file() and (tmp_path / "replay" / "gallery").is_dir()

    outputs = read_outputs(tmp_path / "out_bag")
    for topic in OUTPUTS:
        assert [(t, stamp_ns(m)) for t, m in outputs[topic]] == [(s + 1, s) for s in stamps]
    for (_, mask), (_, score), (_, overlay) in zip(*(outputs[t] for t in OUTPUTS)):
        score_map = fields_to_array(score)
        assert (mask.encoding, score.encoding, overlay.encoding) == ("mono8", "32FC1", "bgr8")
        assert score_map.shape == (720, 1280) and (overlay.height, overlay.width) == (720, 1280)
        np.testing.assert_array_equal(fields_to_array(mask), np.where(score_map >= PARAMS.threshold, 255, 0))
    assert len(list((tmp_path / "replay" / "overlays").glob("*.png"))) == 3


@pytest.mark.parametrize("topic", ["/image", "/image/compressed"])
def test_real_rosbag2_without_metadata_replays_unmodified(shared_data, detector, tmp_path, topic):
    user_bag = tmp_path / "sample_bag"
    shutil.copytree(shared_data / "bags" / "rosbag2_sqlite_sample", user_bag)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in user_bag.iterdir()}
    config = replay.ReplayConfig(bag=user_bag, image_topic=topic, out=tmp_path / "out", params=PARAMS,
                                 write_bag=tmp_path / "written", bag_storage="sqlite3", progress=False)
    summary = replay.replay(config, detector)
    assert summary["frames"] == 1 and "metrics" not in summary
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in user_bag.iterdir()} == before
    with open_bag(user_bag) as reader:
        ((_, timestamp, source),) = list(reader.messages([topic]))
    for items in read_outputs(tmp_path / "written").values():
        ((written_time, msg),) = items
        assert written_time == timestamp and msg.header.stamp.sec == source.header.stamp.sec
        assert msg.header.stamp.nanosec == source.header.stamp.nanosec and (msg.height, msg.width) == (480, 640)


def test_real_ros1_bag_replays(shared_data, detector, tmp_path):
    config = replay.ReplayConfig(bag=shared_data / "bags" / "ros1_t265_sample" / "trimmed_locoffice.bag",
                                 image_topic="/camera/fisheye1/image_raw", out=tmp_path, params=PARAMS,
                                 save_overlays=1, progress=False)
    summary = replay.replay(config, detector)
    assert summary["frames"] == 3 and summary["image_type"] == "sensor_msgs/msg/Image"
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 1
    assert json.loads((tmp_path / "replay.json").read_text())["frames"] == 3


def test_cli_wrong_topic_lists_the_bags_topics(shared_data, tmp_path, capsys):
    bag = shared_data / "bags" / "rosbag2_sqlite_sample"
    code = replay.main([str(bag), "--image-topic", "/imu", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1
    assert "'/imu' has type sensor_msgs/msg/Imu, expected sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage" in err
    assert "/image/compressed  [sensor_msgs/msg/CompressedImage, 1 msgs]" in err and "/text  [std_msgs/msg/String" in err
    code = replay.main([str(bag), "--image-topic", "/image", "--gt-topic", "/missing", "--out", str(tmp_path / "o")])
    assert code == 2 and "ground-truth topic '/missing' is not in the bag" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written for a refused run
