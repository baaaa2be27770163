"""Rosbag replay fails loud: skipped frames are listed in metrics.json and fail the run unless --allow-skips;
outputs are never silently replaced; a damaged bag or a bad --out is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from mgcda_ros import replay

STORE = get_typestore(Stores.ROS2_KILTED)
STAMPS = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(3)]
ARGS = ["--image-topic", "/cam/image", "--gt-topic", "/cam/gt", "--input-width", "128", "--input-height", "64",
        "--score", "msp", "--backend", "torch", "--no-progress", "--gallery", "0", "--save-overlays", "0"]

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _image(stamp: int, pixels: np.ndarray, encoding: str, data: np.ndarray | None = None):
    types = STORE.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    data = np.ascontiguousarray(pixels).reshape(-1) if data is None else data
    return types["sensor_msgs/msg/Image"](header=header, height=pixels.shape[0], width=pixels.shape[1],
                                          encoding=encoding, is_bigendian=0, step=pixels.shape[1] * channels,
                                          data=data)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three labelled frames; the second image's data is cut short (the node and replay reject it)."""
    path = tmp_path_factory.mktemp("bag") / "bag"
    rng = np.random.default_rng(0)
    with Writer(path, version=9) as writer:
        image = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=STORE)
        gt = writer.add_connection("/cam/gt", "sensor_msgs/msg/Image", typestore=STORE)
        for i, stamp in enumerate(STAMPS):
            rgb = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
            label = np.zeros((64, 128), np.uint8)
            label[10:30, 40:80] = 1
            short = rgb.reshape(-1)[:100] if i == 1 else None
            for connection, msg in ((gt, _image(stamp, label, "mono8")), (image, _image(stamp, rgb, "rgb8", short))):
                writer.write(connection, stamp, STORE.serialize_cdr(msg, msg.__msgtype__))
    return path


def test_a_rejected_frame_is_listed_and_fails_unless_allowed(bag: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.main([str(bag), *ARGS, "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("error: "))
    assert line.startswith(f"error: 1 of 3 frames were skipped (frame at stamp {STAMPS[1]} rejected: ")
    assert line.endswith("covers the others only: fix the input or pass --allow-skips to accept that")
    metrics = json.loads((tmp_path / "strict" / "metrics.json").read_text())
    assert (metrics["num_images"], metrics["skipped_frames"], metrics["skipped"]) == (2, 1, [str(STAMPS[1])])
    assert replay.main([str(bag), *ARGS, "--out", str(tmp_path / "lenient"), "--allow-skips"]) == 0
    assert json.loads((tmp_path / "lenient" / "replay.json").read_text())["skipped"] == [str(STAMPS[1])]


def test_existing_outputs_and_damaged_bags(bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert replay.main([str(bag), *ARGS, "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path / 'file'} is a file; name a folder\n"
    (tmp_path / "written").mkdir()
    (tmp_path / "written" / "keep.txt").write_text("an earlier output bag")
    assert replay.main([str(bag), *ARGS, "--out", str(tmp_path / "o"), "--write-bag", str(tmp_path / "written")]) == 2
    assert capsys.readouterr().err == (f"error: --write-bag {tmp_path / 'written'} exists; pass --overwrite to "
                                       "replace it\n")
    assert (tmp_path / "written" / "keep.txt").is_file()

    db3 = next(bag.glob("*.db3"))
    truncated = tmp_path / "truncated.db3"
    truncated.write_bytes(db3.read_bytes()[: db3.stat().st_size // 3])
    assert replay.main([str(truncated), *ARGS, "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read bag {truncated} (truncated or damaged?): ") and err.count("\n") == 1
