"""Frames in flight on a CPU (mgcda_core.runtime.lanes): the mode rule, the time estimates, the scheduler's
guarantees on a runtime of known durations, and real ONNX Runtime sessions called from two threads at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.runtime.factory import RuntimeOptions, make_runtime
from mgcda_core.runtime.lanes import LANES, SOLO, ArrivalRate, LanedRuntime, RunTimes, choose_mode, last_wait_s
from mgcda_core.runtime.onnx_runtime import OnnxRuntime

SIZE = (64, 128)


# -- the mode rule --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("arrival_hz", "solo_ms", "lane_ms", "expected"), [
    (None, 80.0, 140.0, SOLO),      # fewer than two calls seen
    (10.0, None, 140.0, SOLO),      # solo never measured: tried first
    (10.0, 80.0, 140.0, SOLO),      # busy 0.8 of the time: keeps up
    (10.0, 94.0, 140.0, SOLO),      # busy 0.94: still below where lanes are tried
    (10.0, 130.0, 145.0, LANES),    # busy 1.3: behind; two lanes finish 2/145 ms, 1.79x of 1/130 ms
    (10.0, 130.0, 300.0, SOLO),     # behind, but two lanes would finish fewer (2/300 < 1/130)
    (10.0, 130.0, 260.0, SOLO),     # equal: no gain, so the lower latency
    (10.0, 130.0, 240.0, SOLO),     # 1.08x: not worth twice the latency
    (10.0, 133.0, 240.0, LANES),    # 1.11x
    (10.0, 130.0, None, LANES),     # behind and lanes never measured: tried
    (9.5, 100.0, 150.0, LANES),     # busy exactly 0.95
    (float("inf"), 1.0, 1.5, LANES),  # calls back to back
])
def test_choose_mode_from_solo_keeps_one_at_a_time_while_it_keeps_up(arrival_hz, solo_ms, lane_ms, expected) -> None:
    assert choose_mode(SOLO, arrival_hz, solo_ms, lane_ms, lanes=2) == expected


@pytest.mark.parametrize(("arrival_hz", "expected"), [(9.0, LANES), (8.6, LANES), (8.4, SOLO), (None, SOLO)])
def test_choose_mode_leaves_lanes_only_well_below_the_load_that_entered_them(arrival_hz, expected) -> None:
    # one frame alone 100 ms, a lane 150 ms: lanes entered at load 0.95, kept down to 0.85
    assert choose_mode(LANES, arrival_hz, 100.0, 150.0, lanes=2) == expected
    assert choose_mode(SOLO, arrival_hz, 100.0, 150.0, lanes=2) == SOLO  # from solo, none of these is enough


def test_choose_mode_counts_the_lanes() -> None:
    # three lanes of 300 ms finish 10 frames/s, one solo of 130 ms 7.7 (1.3x): lanes; two lanes only 6.7: solo
    assert choose_mode(SOLO, 10.0, 130.0, 300.0, lanes=3) == LANES
    assert choose_mode(SOLO, 10.0, 130.0, 300.0, lanes=2) == SOLO


@pytest.mark.parametrize("kwargs", [dict(arrival_hz=-1.0), dict(solo_ms=float("nan")), dict(lane_ms=-5.0),
                                    dict(lanes=1), dict(min_gain=0.9), dict(current="both")])
def test_choose_mode_refuses_impossible_values(kwargs) -> None:
    args = dict(current=SOLO, arrival_hz=10.0, solo_ms=100.0, lane_ms=150.0, lanes=2) | kwargs
    with pytest.raises(ValueError):
        choose_mode(**args)


# -- estimates ------------------------------------------------------------------------------------------------------
def test_run_times_median_of_the_window_then_fastest_once_stale() -> None:
    times = RunTimes(window=3, stale_s=10.0)
    assert times.estimate(0.0) is None
    for ms, end in ((50.0, 1.0), (200.0, 2.0), (80.0, 3.0), (90.0, 4.0)):  # the window keeps 200, 80, 90
        times.add(ms, end)
    assert times.estimate(4.5) == 90.0
    assert times.estimate(14.0) == 90.0  # 10 s after the last run: not stale yet
    assert times.estimate(14.5) == 50.0  # stale: the fastest ever seen, 50 ms, so that it gets tried again
    times.add(120.0, 30.0)  # the next run after the gap starts a new window
    assert times.estimate(30.0) == 120.0
    assert times.fastest == 50.0


def test_run_times_refuse_bad_values() -> None:
    with pytest.raises(ValueError):
        RunTimes(window=0)
    with pytest.raises(ValueError):
        RunTimes(stale_s=0.0)
    with pytest.raises(ValueError):
        RunTimes().add(-1.0, 1.0)


def test_arrival_rate_over_the_window() -> None:
    rate = ArrivalRate(window=4)
    assert rate.hz() is None
    rate.add(1.0)
    assert rate.hz() is None
    for t in (1.1, 1.2, 1.3, 1.5):  # window: 1.1, 1.2, 1.3, 1.5 -> 3 intervals over 0.4 s
        rate.add(t)
    assert rate.hz() == pytest.approx(7.5)
    with pytest.raises(ValueError):
        ArrivalRate(window=1)


# -- the scheduler, on a runtime whose durations are known ----------------------------------------------------------
class Sleeper:
    """A Runtime that takes ``ms`` per call and returns its input times ``factor``; records each call's interval."""

    name, device = "sleeper", "cpu"

    def __init__(self, ms: float, factor: float, log: list) -> None:
        self.ms, self.factor, self.log = ms, factor, log

    def run(self, image: np.ndarray) -> np.ndarray:
        start = time.monotonic()
        time.sleep(self.ms / 1000.0)
        self.log.append((self.factor, start, time.monotonic()))
        return image * self.factor


def laned(solo_ms: float, lane_ms: float) -> tuple[LanedRuntime, list]:
    log: list = []
    return LanedRuntime(Sleeper(solo_ms, 1.0, log), [Sleeper(lane_ms, 2.0, log), Sleeper(lane_ms, 3.0, log)]), log


def call_from(threads: int, runtime: LanedRuntime, calls: int, pause_s: float = 0.0) -> list[np.ndarray]:
    outputs: list[np.ndarray] = []

    def caller(seed: int) -> None:
        for i in range(calls):
            x = np.full((1, 3, 2, 2), seed * 1000 + i, np.float32)
            y = runtime.run(x)
            assert np.all(y / x == y.flat[0] / x.flat[0])  # its own input back, whichever session ran it
            outputs.append(y / x)
            time.sleep(pause_s)

    workers = [threading.Thread(target=caller, args=(seed + 1,)) for seed in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outputs


def overlaps(log: list) -> list[tuple[float, float]]:
    """Pairs of session factors whose calls overlapped in time."""
    return [(a[0], b[0]) for i, a in enumerate(log) for b in log[i + 1:] if a[1] < b[2] and b[1] < a[2]]


def test_calls_at_a_pace_solo_keeps_up_with_run_alone() -> None:
    runtime, log = laned(solo_ms=20.0, lane_ms=40.0)
    call_from(1, runtime, calls=12, pause_s=0.08)  # one call per >= 100 ms, 20 ms each: busy 0.2
    assert runtime.runs == {SOLO: 12, LANES: 0}
    assert overlaps(log) == []


def test_back_to_back_callers_move_to_lanes_and_a_solo_run_never_shares_the_machine() -> None:
    # solo 60 ms a frame, lanes 80 ms each: two lanes finish 25 frames/s against 16.7
    runtime, log = laned(solo_ms=60.0, lane_ms=80.0)
    call_from(2, runtime, calls=15)
    assert runtime.runs[SOLO] + runtime.runs[LANES] == 30
    assert runtime.runs[LANES] >= 20, runtime.runs  # after a few solo runs and a few calls to measure the rate
    pairs = overlaps(log)
    assert pairs, "two lanes never ran at once"
    assert all(1.0 not in pair for pair in pairs)  # the solo session never overlapped another call
    assert all(a != b for a, b in pairs)  # and a lane never ran two calls at once


def test_back_to_back_callers_stay_solo_when_lanes_finish_fewer() -> None:
    runtime, log = laned(solo_ms=30.0, lane_ms=90.0)  # two lanes: 22 frames/s, solo 33: lanes only to measure
    call_from(2, runtime, calls=15)
    assert runtime.runs[LANES] <= 2, runtime.runs
    assert all(1.0 not in pair for pair in overlaps(log))


def test_last_wait_is_the_time_a_call_waited_for_the_machine() -> None:
    runtime, _ = laned(solo_ms=150.0, lane_ms=300.0)
    waits: dict[str, float] = {}

    def first() -> None:
        runtime.run(np.ones((1, 3, 2, 2), np.float32))
        waits["first"] = last_wait_s(runtime)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.05)
    runtime.run(np.ones((1, 3, 2, 2), np.float32))  # solo mode (never behind): waits for the first call to end
    waits["second"] = last_wait_s(runtime)
    thread.join()
    assert waits["first"] < 0.05
    assert 0.05 < waits["second"] <= 0.15 + 0.5  # the rest of the first call's 150 ms, plus scheduling slack


def test_laned_runtime_needs_two_lanes() -> None:
    log: list = []
    with pytest.raises(ValueError, match="two lanes"):
        LanedRuntime(Sleeper(1.0, 1.0, log), [Sleeper(1.0, 2.0, log)])


# -- real ONNX Runtime sessions -------------------------------------------------------------------------------------
class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)


def test_factory_builds_lanes_only_when_asked_and_on_a_cpu_with_two_threads() -> None:
    model = Small().eval()
    options = RuntimeOptions(input_size=SIZE, frames_in_flight=2, threads=2)
    runtime = make_runtime("onnxruntime", model, "cpu", options)
    assert isinstance(runtime, LanedRuntime) and runtime.max_in_flight == 2
    assert (runtime.name, runtime.device) == ("onnxruntime", "cpu")
    threads = [s.session.get_session_options().intra_op_num_threads for s in runtime.members]
    assert threads == [2, 1, 1]
    single = RuntimeOptions(input_size=SIZE, frames_in_flight=2, threads=1)  # one thread: nothing to share out
    assert isinstance(make_runtime("onnxruntime", model, "cpu", single), OnnxRuntime)
    assert isinstance(make_runtime("onnxruntime", model, "cpu", RuntimeOptions(input_size=SIZE)), OnnxRuntime)
    with pytest.raises(ValueError, match="frames_in_flight"):
        RuntimeOptions(frames_in_flight=0)


def test_two_threads_through_real_sessions_get_the_single_session_answer() -> None:
    model = Small().eval()
    proto = export_to_proto(model, ExportConfig(height=SIZE[0], width=SIZE[1]))
    runtime = make_runtime("onnxruntime", model, "cpu", RuntimeOptions(input_size=SIZE, frames_in_flight=2, threads=2))
    assert isinstance(runtime, LanedRuntime)
    reference = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = [np.random.default_rng(seed).random((1, 3, *SIZE), dtype=np.float32) for seed in range(24)]
    wanted = [reference.run(None, {"image": x})[0] for x in inputs]
    got: dict[int, np.ndarray] = {}

    def caller(indices: range) -> None:
        for i in indices:
            got[i] = runtime.run(inputs[i])

    workers = [threading.Thread(target=caller, args=(range(k, 24, 2),)) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sum(runtime.runs.values()) == 24
    for i, x in enumerate(wanted):
        # the same operators on 1 or 2 threads may sum in another order: float32 rounding of sums of ~150 terms
        scale = float(np.abs(x).max())
        np.testing.assert_allclose(got[i], x, rtol=0, atol=scale * 150 * np.finfo(np.float32).eps)
