"""The node's in-place post-processing equals the detector's own (``Detector.__call__`` + ``anomaly_mask``), and the
per-step timing lines round-trip through the benchmark's parser."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mgcda_core.utils.images import read_rgb
from mgcda_ros.model_loading import load_detector
from mgcda_ros.overlay import anomaly_mask
from mgcda_ros.params import NodeParams
from mgcda_ros.postprocess import run_network, score_into, threshold_into
from mgcda_ros.publish_timing import STEPS, FrameTimer, StepTimes, log_line, parse_log

pytestmark = pytest.mark.usefixtures("single_thread_torch")

FRAME = Path(__file__).resolve().parents[1] / "mgcda_ros" / "assets" / "road_anomaly" / "frames" / \
    "animals22_red_fox_on_road.jpg"




@pytest.mark.parametrize("score", ["max_logit", "msp"])
def test_score_and_mask_written_in_place_equal_the_detector_on_a_real_frame(score: str):
    detector = load_detector(NodeParams(input_width=128, input_height=64, score=score, backend="torch"))
    rgb = cv2.resize(read_rgb(FRAME), (320, 180), interpolation=cv2.INTER_AREA)
    expected = detector(rgb)
    out = np.full(rgb.shape[:2], np.nan, np.float32)
    result = score_into(detector, run_network(detector, rgb), out)
    assert result is out
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    mask = np.zeros(rgb.shape[:2], np.uint8)
    threshold = float(np.median(expected))  # about half the pixels on each side
    threshold_into(out, threshold, mask)
    reference = anomaly_mask(expected, threshold)
    near = np.abs(expected - threshold) <= 1e-6  # float32 rounding may flip only these
    assert set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal((mask == 255)[~near], reference[~near])
    assert 0.2 < reference.mean() < 0.8


def test_in_place_steps_refuse_wrong_buffers():
    detector = load_detector(NodeParams(input_width=128, input_height=64, score="msp", backend="torch"))
    with pytest.raises(ValueError, match="returned shape"):
        score_into(detector, np.zeros((1, 1, 32, 32), np.float32), np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="float32"):
        score_into(detector, np.zeros((1, 1, 64, 128), np.float32), np.zeros((10, 10), np.float64))
    with pytest.raises(ValueError, match="uint8"):
        threshold_into(np.zeros((4, 4), np.float32), 0.5, np.zeros((4, 5), np.uint8))


def test_timing_lines_round_trip_and_feed_the_diagnostics():
    received = time.monotonic() - 0.25
    timer = FrameTimer(received)
    assert 250.0 <= timer.steps["queue"] < 250.0 + 60e3  # the wait since the subscription took the frame
    for step in ("decode", "model", "score_resize", "threshold", "publish_mask"):
        timer.lap(step)
    timer.steps["model"] = 12.5  # a known value survives formatting and parsing
    text = "\n".join(["[DEBUG] [1.0] [anomaly_node]: " + log_line("frame 7", timer), "unrelated line",
                      "[DEBUG] [2.0] [anomaly_node]: " + log_line("b3", timer)])
    parsed = parse_log(text)
    assert set(parsed) == {"frame_7", "b3"}
    assert parsed["b3"]["model"] == 12.5 and set(parsed["b3"]) == {*timer.steps, "received_at"}
    assert parsed["b3"]["received_at"] == pytest.approx(received, abs=1e-6)
    assert "received_at" not in log_line("x", FrameTimer())
    times = StepTimes()
    times.add(timer)
    values = times.diagnostics_values()
    assert set(values) == {f"step_{s}_{q}_ms" for s in STEPS for q in ("p50", "p95")}
    assert values["step_model_p50_ms"] == "12.500" and values["step_overlay_p50_ms"] == "nan"
    assert timer.total_ms() >= 0
