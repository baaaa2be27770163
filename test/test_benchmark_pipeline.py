"""The pipeline benchmark's end-to-end row: a real export run by ONNX Runtime, timed from camera frame to score."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pytest
import torch

from mgcda_core.benchmark.pipeline import end_to_end_row, sustained_frames
from mgcda_core.pipeline.detector import build_graph, to_network_input
from mgcda_core.utils.flops import call_flops

SIZE = (64, 128)
RATE = r"(\d+\.\d)(?: \((?:split|mixed)\))?"  # a block's frames/s and whether the CPUs shared a cache around it


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    """A camera frame, its network tensor and the max-logit graph at SIZE."""
    frame = np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    return {"graph": build_graph("max_logit").eval(), "frame": frame,
            "image": torch.from_numpy(to_network_input(frame, SIZE)), "size": SIZE}


def test_end_to_end_row_times_the_exported_graph_and_reports_its_work(case: dict[str, Any]) -> None:
    rows: list[dict] = []
    with torch.inference_mode():
        end_to_end_row(rows, "end to end, max logit", **case, repeats=2)
    (row,) = rows
    assert row["backend"] == "onnxruntime" and row["size"] == "64x128"
    assert row["ms"] > 0
    match = re.fullmatch(f"end to end, max logit, {RATE} frames/s", row["stage"])
    assert match is not None, row["stage"]
    assert match[1] == f"{1000.0 / row['ms']:.1f}"
    with torch.inference_mode():
        assert row["GFLOP"] == call_flops(lambda: case["graph"](case["image"])) / 1e9 > 0


def test_sustained_row_reports_each_block_and_refuses_empty_blocks(case: dict[str, Any]) -> None:
    rows: list[dict] = []
    with torch.inference_mode():
        end_to_end_row(rows, "end to end", **case, repeats=3, blocks=2)
    (row,) = rows
    match = re.fullmatch(f"end to end, 2 blocks of 3 frames: {RATE}, {RATE} frames/s", row["stage"])
    assert match is not None, row["stage"]
    low, high = sorted(float(match[i]) for i in (1, 2))
    assert 0 < low
    # the median over all six frames lies between the blocks' medians (the label rounds rates to 0.1 frames/s)
    assert 1000.0 / (high + 0.05) <= row["ms"] <= 1000.0 / (low - 0.05)
    with pytest.raises(ValueError, match="blocks, repeats and in_flight must be >= 1"):
        end_to_end_row([], "end to end", **case, repeats=3, blocks=0)


def test_two_frames_in_flight_row_runs_every_frame_and_says_how_many_ran_side_by_side(case: dict[str, Any]) -> None:
    rows: list[dict] = []
    with torch.inference_mode():
        end_to_end_row(rows, "end to end", **case, repeats=6, blocks=2, in_flight=2)
    (row,) = rows
    match = re.fullmatch(f"end to end, 2 blocks of 6 frames: {RATE}, {RATE} frames/s \\((\\d+) % side by side\\)",
                         row["stage"])
    assert match is not None, row["stage"]
    assert float(match[1]) > 0 and float(match[2]) > 0 and 0 <= int(match[3]) <= 100


def test_sustained_frames_shares_the_frames_between_callers() -> None:
    def fn() -> None:
        time.sleep(0.05)

    times, rate = sustained_frames(fn, 10, callers=2)
    assert len(times) == 10 and min(times) >= 50.0
    # two callers of a 50 ms call: more than one caller's 20 calls/s, never more than two callers' 40
    assert 20.0 < rate <= 40.0
    alone, alone_rate = sustained_frames(fn, 3)
    assert len(alone) == 3 and alone_rate == pytest.approx(1000.0 / sorted(alone)[1])
    with pytest.raises(ValueError, match="frames and callers"):
        sustained_frames(fn, 0, callers=2)
