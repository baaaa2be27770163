"""Frames one at a time on every thread, or side by side on a share of them each: whichever keeps up, measured.

ONNX Runtime splits every operator of a frame between its threads, and each operator reads what the others just
wrote. On cores that share a cache that is the fastest way to finish one frame (here 80 ms on two threads against
141 on one); where handing data between cores is slow — a VM whose host places its two vCPUs on two sockets — two
threads gain little (125–130 ms), and two frames side by side on one thread each finish far more frames per second
(13.4–14.5 against 7.7; docs/RESULTS.md, "Why the speed jumps"). Which one the frames need depends on the host and
on how fast they come, so :class:`LanedRuntime` measures both and switches (:func:`choose_mode`): one frame at a
time on every thread while that keeps up with the calls (the lowest latency), side by side on lanes when it does
not and the lanes together finish clearly more.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from mgcda_core.runtime.base import Runtime

LOG = logging.getLogger(__name__)

SOLO, LANES = "solo", "lanes"
#: how busy one-at-a-time must be (time of a frame x frames per second) before lanes are tried, and below which
#: it takes over again: apart, so that a camera near the limit does not flip the modes frame by frame (a switch
#: costs a frame the wait for the other mode's runs to end). Above 0.95, waiting frames pile up at every hiccup of
#: the machine (a queue's wait grows as 1 / (1 - load)).
ENTER_LANES, LEAVE_LANES = 0.95, 0.85
#: how many more frames per second the lanes must finish to be worth their latency (a frame on a lane takes up to
#: twice as long): measured here, lanes that merely match one-at-a-time (12 frames/s both) doubled the latency
MIN_GAIN = 1.1


def choose_mode(current: str, arrival_hz: float | None, solo_ms: float | None, lane_ms: float | None, lanes: int,
                min_gain: float = MIN_GAIN) -> str:
    """The mode for the next call, given the ``current`` one: ``"solo"`` (each frame alone on every thread) or
    ``"lanes"`` (up to ``lanes`` frames side by side).

    One-at-a-time's load is ``arrival_hz * solo_ms / 1000``. Lanes when the load reaches ``ENTER_LANES`` (from
    solo) or stays at ``LEAVE_LANES`` or more (in lanes), and the lanes finish ``min_gain`` times as many frames per
    second (``lanes / lane_ms >= min_gain / solo_ms``); solo otherwise. Unknown times (None) count as fast, so that
    a mode never measured gets tried: solo first, lanes once solo is found not to keep up. ``arrival_hz`` None
    (fewer than two calls seen) keeps solo.
    """
    if current not in (SOLO, LANES):
        raise ValueError(f"current mode must be {SOLO!r} or {LANES!r}, got {current!r}")
    for name, value in (("arrival_hz", arrival_hz), ("solo_ms", solo_ms), ("lane_ms", lane_ms)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be >= 0 or None, got {value}")
    if lanes < 2 or not min_gain >= 1:
        raise ValueError(f"need lanes >= 2 and min_gain >= 1, got {lanes} and {min_gain}")
    if arrival_hz is None or solo_ms is None:
        return SOLO
    load = arrival_hz * solo_ms / 1000.0
    if load < (ENTER_LANES if current == SOLO else LEAVE_LANES):
        return SOLO
    return LANES if lane_ms is None or lanes * solo_ms >= min_gain * lane_ms else SOLO


class RunTimes:
    """Wall times of one kind of run (ms): :meth:`estimate` is the median of the last ``window``. When the newest
    is older than ``stale_s``, the machine may have changed since: the estimate is then the fastest time ever
    seen, so that a mode not chosen for a while gets tried again, and the next run starts a new window."""

    def __init__(self, window: int = 8, stale_s: float = 20.0) -> None:
        if window < 1 or not stale_s > 0:
            raise ValueError(f"window must be >= 1 and stale_s > 0, got {window} and {stale_s}")
        self._recent: deque[float] = deque(maxlen=window)
        self._stale_s = stale_s
        self._last_end = -float("inf")
        self.fastest = float("inf")

    def add(self, ms: float, end: float) -> None:
        """A run of ``ms`` milliseconds that ended at ``end`` (monotonic seconds)."""
        if not ms >= 0:
            raise ValueError(f"a run cannot take {ms} ms")
        if end - ms / 1000.0 - self._last_end > self._stale_s:
            self._recent.clear()
        self._recent.append(ms)
        self._last_end = end
        self.fastest = min(self.fastest, ms)

    def estimate(self, now: float) -> float | None:
        """Expected ms of the next run of this kind at ``now``; None before the first."""
        if not self._recent:
            return None
        if now - self._last_end > self._stale_s:
            return self.fastest
        return statistics.median(self._recent)


class ArrivalRate:
    """Calls per second over the last ``window`` calls (None before two)."""

    def __init__(self, window: int = 8) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self._times: deque[float] = deque(maxlen=window)

    def add(self, now: float) -> None:
        self._times.append(now)

    def hz(self) -> float | None:
        if len(self._times) < 2:
            return None
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else float("inf")


class LanedRuntime:
    """A ``Runtime`` whose ``run`` may be called from up to ``len(lanes)`` threads at once (``max_in_flight``).

    ``solo`` runs a frame on every thread; each of ``lanes`` runs one on its share (e.g. two one-thread ONNX
    Runtime sessions of the same graph on a 2-core CPU). At each call :func:`choose_mode` picks from the call rate
    and the median recent times of both kinds; a solo run starts only with nothing in flight and a lane only with
    no solo run in flight, so no run ever shares the threads it was sized for and every time measured is clean.
    ``runs`` counts the calls of each kind; ``last_wait_s`` tells a caller how long its last call waited.
    """

    def __init__(self, solo: Runtime, lanes: Sequence[Runtime], window: int = 8, stale_s: float = 20.0) -> None:
        if len(lanes) < 2:
            raise ValueError(f"a laned runtime needs at least two lanes, got {len(lanes)}")
        self.name, self.device = solo.name, solo.device
        self.max_in_flight = len(lanes)
        self._solo = solo
        self._lanes = list(lanes)
        self._free = list(range(len(lanes)))
        self._times = {SOLO: RunTimes(window, stale_s), LANES: RunTimes(window, stale_s)}
        self._arrivals = ArrivalRate(window)
        self._solo_running = False
        self._current = SOLO
        self._cond = threading.Condition()
        self._waits = threading.local()
        self.runs = {SOLO: 0, LANES: 0}

    @property
    def members(self) -> tuple[Runtime, ...]:
        """The runtimes it schedules: solo first, then the lanes."""
        return (self._solo, *self._lanes)

    def last_wait_s(self) -> float:
        """How long the calling thread's last ``run`` waited for its turn on the CPU (0.0 before any)."""
        return float(getattr(self._waits, "seconds", 0.0))

    def _mode(self, now: float) -> str:
        hz, solo, lane = self._arrivals.hz(), self._times[SOLO].estimate(now), self._times[LANES].estimate(now)
        mode = choose_mode(self._current, hz, solo, lane, len(self._lanes))
        if mode != self._current:
            LOG.info("frames in flight: %s -> %s (%s calls/s, a frame alone %s ms, on a lane %s ms)", self._current,
                     mode, _number(hz), _number(solo), _number(lane))
            self._current = mode
        return mode

    def _claim(self) -> int | None:
        """Block until this call may start; the lane it runs on, or None for solo."""
        with self._cond:
            self._arrivals.add(time.monotonic())
            while True:
                if self._mode(time.monotonic()) == SOLO:
                    if not self._solo_running and len(self._free) == len(self._lanes):
                        self._solo_running = True
                        self.runs[SOLO] += 1
                        return None
                elif not self._solo_running and self._free:
                    self.runs[LANES] += 1
                    return self._free.pop(0)
                self._cond.wait()  # every run's end notifies

    def run(self, image: np.ndarray) -> np.ndarray:
        called = time.monotonic()
        lane = self._claim()
        start = time.monotonic()
        self._waits.seconds = start - called
        try:
            return (self._solo if lane is None else self._lanes[lane]).run(image)
        finally:
            end = time.monotonic()
            with self._cond:
                self._times[SOLO if lane is None else LANES].add(1000.0 * (end - start), end)
                if lane is None:
                    self._solo_running = False
                else:
                    self._free.append(lane)
                self._cond.notify_all()


def _number(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f}"


def last_wait_s(runtime: Runtime) -> float:
    """How long the calling thread's last ``runtime.run`` waited for the CPU (0.0 for a runtime without lanes)."""
    return runtime.last_wait_s() if isinstance(runtime, LanedRuntime) else 0.0
