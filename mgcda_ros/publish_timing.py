"""Where the node's time goes per frame, step by step, between taking a frame and its last publish.

The worker marks the end of each step (``FrameTimer.lap``); ``StepTimes`` keeps rolling percentiles per step for
/diagnostics (``step_<name>_p50_ms``/``_p95_ms``) and formats one debug line per frame (``--log-level
anomaly_node:=debug``), which ``python -m mgcda_ros.benchmark`` reads to subtract each frame's own model time.
Steps: ``queue`` (from the subscription callback taking the frame to the worker starting on it), ``decode``,
``lane_wait`` (with two frames in flight: waiting for the CPU before the network, ``mgcda_core.runtime.lanes``),
``model`` (resize to the network size and the network), ``in_order`` (waiting for an earlier frame still being
worked on to publish first, ``mgcda_ros.in_order``), ``score_resize`` (score back to camera size and calibration),
``threshold`` (mono8 mask into its message), ``publish_mask``, ``publish_score``, ``overlay``,
``publish_overlay``; the last three only when someone subscribes. The debug line also carries ``received_at``, the
callback's monotonic time in seconds (a system-wide clock), so that the benchmark can split camera -> node,
node and node -> subscriber times.
"""

from __future__ import annotations

import re
import time

from mgcda_ros.stats import RollingPercentiles

STEPS = ("queue", "decode", "lane_wait", "model", "in_order", "score_resize", "threshold", "publish_mask",
         "publish_score", "overlay", "publish_overlay")
#: the debug line's prefix; the benchmark parses ``timing <frame_id> <step>=<ms> ...``
LOG_PREFIX = "timing"
_LOG_PATTERN = re.compile(rf"{LOG_PREFIX} (\S+) ((?:\w+=[0-9.]+ ?)+)")


class FrameTimer:
    """Wall time of consecutive steps of one frame (monotonic clock), in ms; with ``received`` (the monotonic time
    the frame was taken from the subscription), the wait before the first step is the ``queue`` step."""

    def __init__(self, received: float | None = None) -> None:
        self.start = self._last = time.monotonic()
        self.received = received
        self.steps: dict[str, float] = {} if received is None else {"queue": (self.start - received) * 1e3}

    def lap(self, step: str) -> float:
        """End ``step`` now; returns its duration in seconds."""
        now = time.monotonic()
        duration, self._last = now - self._last, now
        self.steps[step] = duration * 1e3
        return duration

    def total_ms(self) -> float:
        return (self._last - self.start) * 1e3


class StepTimes:
    """Rolling percentiles per step over the last ``size`` frames (a step absent from a frame adds nothing)."""

    def __init__(self, size: int = 200) -> None:
        self._windows = {step: RollingPercentiles(size) for step in STEPS}

    def add(self, timer: FrameTimer) -> None:
        for step, ms in timer.steps.items():
            self._windows[step].add(ms)

    def diagnostics_values(self) -> dict[str, str]:
        values = {}
        for step, window in self._windows.items():
            p50, p95 = window.percentiles(50, 95)
            values[f"step_{step}_p50_ms"], values[f"step_{step}_p95_ms"] = f"{p50:.3f}", f"{p95:.3f}"
        return values


def log_line(frame_id: str, timer: FrameTimer) -> str:
    """``timing <frame_id> queue=0.1 decode=0.412 model=8.130 ... received_at=5123.456789`` (ms; received_at in s);
    a frame_id with spaces is written with ``_``."""
    steps = " ".join(f"{step}={ms:.3f}" for step, ms in timer.steps.items())
    received = "" if timer.received is None else f" received_at={timer.received:.6f}"
    return f"{LOG_PREFIX} {frame_id.replace(' ', '_') or '-'} {steps}{received}"


def parse_log(text: str) -> dict[str, dict[str, float]]:
    """frame_id -> {step: ms} from a node log holding :func:`log_line` lines (the last line per frame_id wins)."""
    frames = {}
    for match in _LOG_PATTERN.finditer(text):
        frames[match.group(1)] = {key: float(value) for key, value in
                                  (item.split("=") for item in match.group(2).split())}
    return frames
