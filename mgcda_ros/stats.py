"""Rolling latency percentiles and event rates for the node's /diagnostics (thread-safe)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class RollingPercentiles:
    """The last ``size`` samples of a quantity; percentiles over them (nan when empty)."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64)
        if values.size == 0:
            return tuple(float("nan") for _ in qs)
        return tuple(float(v) for v in np.percentile(values, qs))


class RateMeter:
    """Events per second over a sliding window of ``window_s`` seconds (monotonic seconds in)."""

    def __init__(self, window_s: float = 2.0) -> None:
        self._window = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self, now: float) -> float:
        with self._lock:
            self._trim(now)
            return len(self._times) / self._window

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self._window:
            self._times.popleft()


class RecentEvents:
    """Count of events in the last ``window_s`` seconds, and the newest one's note (monotonic seconds in): a
    diagnostics level computed from it clears once the cause has stopped for a window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self.last_note = ""
        self._lock = threading.Lock()

    def add(self, now: float, note: str = "") -> None:
        with self._lock:
            self._times.append(now)
            self.last_note = note or self.last_note
            self._trim(now)

    def count(self, now: float) -> int:
        with self._lock:
            self._trim(now)
            return len(self._times)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
