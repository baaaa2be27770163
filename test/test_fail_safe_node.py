"""``anomaly_node`` fails safe and loud, in real node processes over DDS (loopback): a score map with NaN is an
error for that frame (nothing published, counted, one ERROR line, ERROR in /diagnostics) and never an all-clear;
a compressed image is judged by the size its header declares before anything is decoded; sender text is quoted
shortened; a model or parameter the node cannot run with stops start-up in one line (exit status 2), or fails
the managed node's configure transition.

Two nodes start once for the module, both on small ONNX graphs built here (fast to load): ``/nan`` (raw input;
its score is NaN wherever the network input is black) and ``/jpeg`` (compressed input, a finite score).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from onnx_graphs import score_graph, write_graph
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CompressedImage, Image
from service_calls import answer, change_state, lifecycle_state
from start_failures import assert_refused_in_one_line

from mgcda_core.utils.images import HARD_MAX_PIXELS
from mgcda_ros.conversions import fields_to_array
from mgcda_ros.ros_process import NodeProcess, Peer, diagnostics_values, wait_until

pytestmark = pytest.mark.ros

HEIGHT, WIDTH = 64, 128  # the network input: frames of this size reach the graph unresized
COMMON = {"input_width": WIDTH, "input_height": HEIGHT, "score": "max_logit", "backend": "onnxruntime",
          "device": "cpu", "qos_reliability": "reliable", "qos_depth": 100, "max_age_ms": 0.0,
          "warn_throttle_s": 1.0, "diagnostics_window_s": 3.0, "input_timeout_s": 600.0}
OUTPUTS = ("anomaly_mask", "anomaly_score", "anomaly_overlay")
START_TIMEOUT = 600.0  # loading took minutes on a busy 2-core machine
ANSWER_TIMEOUT = 120.0


def domain_id(offset: int) -> int:
    return (int(os.environ["ROS_DOMAIN_ID"]) + offset) % 200


def raw_frame(rgb: np.ndarray, frame_id: str, encoding: str = "rgb8") -> Image:
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 5
    msg.height, msg.width, msg.encoding, msg.step = rgb.shape[0], rgb.shape[1], encoding, rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg


def jpeg_frame(data: bytes, frame_id: str) -> CompressedImage:
    msg = CompressedImage()
    msg.header.frame_id, msg.format, msg.data = frame_id, "jpeg", data
    return msg


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return encoded.tobytes()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x8 JPEG (under a kilobyte) whose frame header is rewritten to declare ``width`` x ``height``."""
    data = bytearray(jpeg_bytes(np.full((8, 16, 3), 128, np.uint8)))
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def memory_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


class Rig:
    """This process's side: a camera per node, output and diagnostics subscribers, parameter clients."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.camera = {"nan": peer.publisher(Image, "/nan/image"),
                       "jpeg": peer.publisher(CompressedImage, "/jpeg/image/compressed")}
        self.out = {(ns, topic): peer.subscribe(Image, f"/{ns}/{topic}") for ns in self.camera for topic in OUTPUTS}
        self.diag = peer.subscribe(DiagnosticArray, "/diagnostics", depth=1000)
        self.params = {ns: AsyncParameterClient(peer.node, f"/{ns}/anomaly_node") for ns in self.camera}
        self.answered = dict.fromkeys(self.camera, 0)  # frames each node answered (all its input comes from here)

    def answer(self, ns: str, frame_id: str, topic: str = "anomaly_mask") -> Image | None:
        return next((m for m in self.out[(ns, topic)].messages() if m.header.frame_id == frame_id), None)

    def send_and_wait(self, ns: str, msg: Any, topic: str = "anomaly_mask") -> Image:
        self.camera[ns].publish(msg)
        answer = wait_until(lambda: self.answer(ns, msg.header.frame_id, topic), ANSWER_TIMEOUT,
                            f"/{ns}/{topic} for {msg.header.frame_id}")
        self.answered[ns] += 1
        return answer

    def settled(self, ns: str) -> dict[str, int]:
        """Counters once every answered frame is counted as processed (published before it is counted)."""
        return wait_until(lambda: (c := self.counters(ns))["processed"] == self.answered[ns] and c, ANSWER_TIMEOUT,
                          f"/{ns} processed == {self.answered[ns]}")

    def counters(self, ns: str) -> dict[str, int]:
        values = wait_until(lambda: diagnostics_values(self.diag.messages(), f"/{ns}/anomaly_node"),
                            ANSWER_TIMEOUT, f"/{ns} diagnostics")
        return {k: int(v) for k, v in values.items() if v.isdigit()}

    def counter_reaches(self, ns: str, name: str, value: int) -> dict[str, int]:
        return wait_until(lambda: (c := self.counters(ns))[name] >= value and c, ANSWER_TIMEOUT,
                          f"/{ns} {name} >= {value}")

    def status_after(self, ns: str, since: float, predicate: Any, what: str) -> DiagnosticStatus:
        def found() -> DiagnosticStatus | None:
            return next((s for t, a in self.diag.items if t > since for s in a.status
                         if f"/{ns}/anomaly_node" in s.name and predicate(s)), None)
        return wait_until(found, ANSWER_TIMEOUT, what)

    def set(self, ns: str, name: str, value: Any) -> Any:
        return answer(lambda: self.params[ns].set_parameters([Parameter(name, value=value)]),
                      f"/{ns}/anomaly_node's parameter service", ANSWER_TIMEOUT).results[0]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Rig, dict[str, NodeProcess]]]:
    domain = domain_id(31)
    work = tmp_path_factory.mktemp("fail_safe")
    nan_model = write_graph(score_graph(HEIGHT, WIDTH, nan_where_black=True), work / "nan_where_black.onnx")
    model = write_graph(score_graph(HEIGHT, WIDTH), work / "mean.onnx")
    peer = Peer("fail_safe_rig", domain)
    rig = Rig(peer)
    procs = {"nan": NodeProcess({**COMMON, "model_path": str(nan_model)}, domain, work / "nan",
                                ros_args=("-r", "__ns:=/nan")),
             "jpeg": NodeProcess({**COMMON, "model_path": str(model), "input_transport": "compressed"}, domain,
                                 work / "jpeg", ros_args=("-r", "__ns:=/jpeg"))}
    try:
        for ns, proc in procs.items():
            wait_until(lambda: rig.camera[ns].get_subscription_count() > 0 or not proc.alive(), START_TIMEOUT,
                       f"/{ns}/anomaly_node to subscribe")
            assert proc.alive(), proc.output()
            for topic in OUTPUTS:
                wait_until(lambda: peer.node.count_publishers(f"/{ns}/{topic}") > 0, START_TIMEOUT, topic)
            wait_until(rig.params[ns].services_are_ready, START_TIMEOUT, f"/{ns} parameter services")
        yield rig, procs
    finally:
        peer.close()
        codes = {ns: proc.stop() for ns, proc in procs.items()}
        assert codes == {"nan": 0, "jpeg": 0}, {ns: proc.output()[-3000:] for ns, proc in procs.items()}


def test_a_non_finite_score_is_an_error_not_an_all_clear(rig: tuple[Rig, dict[str, NodeProcess]]) -> None:
    rig, procs = rig
    half_black = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    half_black[:, : WIDTH // 2] = 0  # score 0 / 0 = NaN on these 64 x 64 = 4096 of 8192 pixels
    since = time.monotonic()
    rig.camera["nan"].publish(raw_frame(half_black, "half_black"))
    counters = rig.counter_reaches("nan", "errors", 1)
    assert (counters["errors"], counters["processed"]) == (1, 0)
    detail = ("frame at stamp 1234.000000005 (frame_id 'half_black'): the model produced a score map with 4096 NaN "
              "or infinite values of 8192; refusing to score it (are the weights damaged?)")
    status = rig.status_after("nan", since, lambda s: s.level == DiagnosticStatus.ERROR, "/nan ERROR")
    assert status.message == f"1 inference error(s) in the last 3 s (last: ModelError: {detail})"
    values = {kv.key: kv.value for kv in status.values}
    assert values["last_error"] == f"ModelError: {detail}" and values["errors"] == "1"
    lines = [line for line in procs["nan"].output().splitlines() if "processing failed" in line]
    assert len(lines) == 1 and "[ERROR]" in lines[0] and "Traceback" not in procs["nan"].output()
    assert lines[0].endswith(f"processing failed (1 so far): ModelError: {detail}")

    # the next good frame is answered on every output; nothing was ever published for the NaN one
    grey = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    rig.send_and_wait("nan", raw_frame(grey, "grey"), "anomaly_overlay")
    score = fields_to_array(rig.send_and_wait("nan", raw_frame(grey, "grey2"), "anomaly_score"))
    mask = fields_to_array(rig.answer("nan", "grey2"))  # type: ignore[arg-type]
    assert np.isfinite(score).all() and score.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(mask, np.where(score >= 0.5, 255, 0))
    assert all(rig.answer("nan", "half_black", topic) is None for topic in OUTPUTS)
    assert rig.settled("nan")["errors"] == 1
    # the level clears once the error is older than diagnostics_window_s
    rig.status_after("nan", time.monotonic(), lambda s: s.level == DiagnosticStatus.OK and s.message == "running",
                     "/nan OK after the window")


def test_a_tiny_jpeg_declaring_65500x1000_is_rejected_before_decoding(
        rig: tuple[Rig, dict[str, NodeProcess]]) -> None:
    rig, procs = rig
    pid = procs["jpeg"].process.pid
    bomb = jpeg_declaring(65500, 1000)
    assert len(bomb) < 1000
    rig.send_and_wait("jpeg", jpeg_frame(jpeg_bytes(np.full((96, 160, 3), 90, np.uint8)), "warm"))
    before = rig.settled("jpeg")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS (VmHWM) := current RSS
    rss_kb = memory_kb(pid, "VmRSS")
    since = time.monotonic()
    rig.camera["jpeg"].publish(jpeg_frame(bomb, "bomb"))
    after = rig.counter_reaches("jpeg", "rejected", before["rejected"] + 1)
    assert after["processed"] == before["processed"] and after["errors"] == before["errors"]
    status = rig.status_after("jpeg", since, lambda s: s.level == DiagnosticStatus.WARN, "/jpeg WARN")
    assert {kv.key: kv.value for kv in status.values}["last_rejection"] == (
        "image size 65500x1000 exceeds the limit of 16777216 pixels")
    assert memory_kb(pid, "VmHWM") - rss_kb < 50 * 1024  # decoding it costs about 380 MB
    assert rig.answer("jpeg", "bomb") is None
    mask = rig.send_and_wait("jpeg", jpeg_frame(jpeg_bytes(np.full((96, 160, 3), 90, np.uint8)), "after_bomb"))
    assert (mask.height, mask.width) == (96, 160)


def test_max_input_pixels_applies_at_run_time_under_its_ceiling(rig: tuple[Rig, dict[str, NodeProcess]]) -> None:
    rig, _ = rig
    above = rig.set("jpeg", "max_input_pixels", HARD_MAX_PIXELS + 1)
    assert not above.successful
    assert above.reason == f"Parameter max_input_pixels out of range. Min: 4, Max: {HARD_MAX_PIXELS}, value: " \
                           f"{HARD_MAX_PIXELS + 1}"
    assert rig.set("jpeg", "max_input_pixels", 10_000).successful
    try:
        before = rig.counters("jpeg")
        since = time.monotonic()
        rig.camera["jpeg"].publish(jpeg_frame(jpeg_bytes(np.full((96, 160, 3), 90, np.uint8)), "over_limit"))
        rig.counter_reaches("jpeg", "rejected", before["rejected"] + 1)
        status = rig.status_after("jpeg", since, lambda s: "10000 pixels" in s.message, "/jpeg rejection")
        assert "(last: image size 160x96 exceeds the limit of 10000 pixels)" in status.message
    finally:
        assert rig.set("jpeg", "max_input_pixels", 4096 * 4096).successful


def test_a_10000_character_encoding_is_not_echoed(rig: tuple[Rig, dict[str, NodeProcess]]) -> None:
    rig, procs = rig
    before = rig.counters("nan")
    since = time.monotonic()
    rig.camera["nan"].publish(raw_frame(np.zeros((4, 4, 3), np.uint8), "long_encoding", encoding="e" * 10_000))
    rig.counter_reaches("nan", "rejected", before["rejected"] + 1)
    status = rig.status_after("nan", since, lambda s: "rejected" in s.message, "/nan rejection")
    rejection = {kv.key: kv.value for kv in status.values}["last_rejection"]
    assert rejection.startswith("unsupported encoding 'eeee") and "... (10002 characters): expected one of" in rejection
    assert len(rejection) < 400 and len(status.message) < 600
    line = wait_until(lambda: next((line for line in procs["nan"].output().splitlines()
                                    if "unsupported encoding" in line), None), ANSWER_TIMEOUT, "the warning")
    assert "rejected input message" in line and len(line) < 600


def test_a_model_or_parameter_the_node_cannot_run_with_stops_start_up_in_one_line(tmp_path: Path) -> None:
    other = write_graph(score_graph(HEIGHT, WIDTH, channels_out=19), tmp_path / "segmentation.onnx")
    foreign = write_graph(score_graph(HEIGHT, WIDTH), tmp_path / "foreign.onnx",
                          {"onnx_sha256": "0" * 64, "description": {"stages": "score", "score": "max_logit"}})
    foreign_sha = hashlib.sha256(foreign.read_bytes()).hexdigest()
    cases = {
        "output": ({"model_path": str(other)},
                   f"model file {other} is not a graph the node can run: ONNX output 'score' is [1, 19, 64, 128], "
                   "expected a score map N x 1 x H x W (H x W = 64 x 128) (input_height x input_width = 64 x 128)"),
        "record": ({"model_path": str(foreign)},
                   f"model file {foreign} (sha256 {foreign_sha}) does not match its export record {foreign}.json "
                   f"(onnx_sha256 '{'0' * 64}'): the two come from different exports; export the model again"),
        "ceiling": ({"max_input_pixels": HARD_MAX_PIXELS + 1},
                    f"parameter 'max_input_pixels' = {HARD_MAX_PIXELS + 1} is invalid: expected a number in "
                    f"[4, {HARD_MAX_PIXELS}] ({HARD_MAX_PIXELS} = 8192 x 8192 is a hard ceiling"),
    }
    procs = {name: NodeProcess({**COMMON, **params}, domain_id(32 + i), tmp_path / name)
             for i, (name, (params, _)) in enumerate(cases.items())}
    assert_refused_in_one_line(procs, {name: case[1] for name, case in cases.items()}, START_TIMEOUT)


def test_the_managed_node_fails_configure_for_a_graph_it_cannot_run(tmp_path: Path) -> None:
    other = write_graph(score_graph(HEIGHT, WIDTH, input_name="input"), tmp_path / "other.onnx")
    domain = domain_id(36)
    peer = Peer("sequencer_wrong_graph", domain)
    get_state = peer.node.create_client(GetState, "/managed/anomaly_node/get_state")
    change = peer.node.create_client(ChangeState, "/managed/anomaly_node/change_state")
    proc = NodeProcess({**COMMON, "model_path": str(other)}, domain, tmp_path / "managed",
                       command=(sys.executable, "-m", "mgcda_ros.lifecycle_node"), ros_args=("-r", "__ns:=/managed"))
    try:
        wait_until(lambda: change.service_is_ready() or not proc.alive(), START_TIMEOUT, "lifecycle services")
        assert not change_state(change, get_state, Transition.TRANSITION_CONFIGURE, ANSWER_TIMEOUT), proc.output()
        assert lifecycle_state(get_state, ANSWER_TIMEOUT) == "unconfigured"
        # one line per configure that ran (a request whose answer Fast DDS lost is sent again)
        lines = [line for line in proc.output().splitlines() if "configure failed" in line]
        assert lines and all(line.endswith(
            f"configure failed: model file {other} is not a graph the node can run: ONNX model inputs are "
            "['input'], expected exactly one named 'image' (input_height x input_width = 64 x 128)")
            for line in lines), proc.output()
        assert "Traceback" not in proc.output()
    finally:
        peer.close()
        assert proc.stop() == 0, proc.output()[-3000:]
