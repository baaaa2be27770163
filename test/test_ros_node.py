"""``anomaly_node`` in separate processes (real rclpy, DDS on loopback): headers, encodings, JPEG input, no
backlog under a burst, stale frames, 1,000 malformed messages, ``~/enable``, use_sim_time, and a missing model.

Two nodes start once for the module (they load concurrently): ``/raw`` (Image, use_sim_time with /clock from
this process) and ``/jpeg`` (CompressedImage). Both use a 64x128 network input and the MSP score to stay fast,
and reliable input QoS with a deep queue so that every message reaches the node and is counted there (the
default sensor-data QoS may lose messages in transport, which the node can neither see nor count).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from service_calls import answer
from start_failures import assert_refused_in_one_line
from std_srvs.srv import SetBool

from mgcda_core.runtime.factory import allowed_cpus
from mgcda_core.utils.images import read_rgb
from mgcda_ros.conversions import fields_to_array
from mgcda_ros.overlay import make_overlay
from mgcda_ros.ros_process import NodeProcess, Peer, diagnostics_values, wait_until

pytestmark = pytest.mark.ros

ASSET = Path(__file__).resolve().parents[1] / "mgcda_ros" / "assets" / "road_anomaly" / "frames"
COMMON = {"input_width": 128, "input_height": 64, "score": "msp", "threshold": 0.3, "qos_reliability": "reliable",
          "qos_depth": 1000, "max_age_ms": 5000.0, "warn_throttle_s": 2.0}
SIM_T0 = 1000.0  # /clock starts here: far from wall time, so a node ignoring use_sim_time drops every frame
SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)  # tgkill(tgid, tid, sig)
START_TIMEOUT = 600.0  # loading the model took minutes on a busy 2-core machine
ANSWER_TIMEOUT = 60.0


def domain_id(offset: int) -> int:
    """A domain per use, derived from the per-process id conftest set (parallel pytest runs do not collide)."""
    return (int(os.environ["ROS_DOMAIN_ID"]) + offset) % 200


@pytest.fixture(scope="module")
def road_frame() -> np.ndarray:
    rgb = read_rgb(ASSET / "animals22_red_fox_on_road.jpg")
    return cv2.resize(rgb, (160, 96), interpolation=cv2.INTER_AREA)


class Harness:
    """This process's side: publishers, subscribers, a sim clock, diagnostics."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.t0 = time.monotonic()
        self.clock_pub = peer.publisher(Clock, "/clock", depth=1)
        peer.node.create_timer(0.02, self._tick)
        self.image_pub = peer.publisher(Image, "/raw/image")
        self.jpeg_pub = peer.publisher(CompressedImage, "/jpeg/image/compressed")
        self.out = {(ns, topic): peer.subscribe(Image, f"/{ns}/{topic}", depth=1000)
                    for ns in ("raw", "jpeg") for topic in ("anomaly_mask", "anomaly_score", "anomaly_overlay")}
        self.diag = peer.subscribe(DiagnosticArray, "/diagnostics", depth=100)
        self.enable = peer.node.create_client(SetBool, "/raw/anomaly_node/enable")
        self.sent = {"raw": 0, "jpeg": 0}  # reliable deep-queue input QoS: every message sent is received

    def send(self, ns: str, msg: Image | CompressedImage) -> None:
        (self.image_pub if ns == "raw" else self.jpeg_pub).publish(msg)
        self.sent[ns] += 1

    def sim_now(self) -> float:
        return SIM_T0 + time.monotonic() - self.t0

    def _tick(self) -> None:
        msg = Clock()
        msg.clock = stamp(self.sim_now())
        self.clock_pub.publish(msg)

    def answers(self, ns: str, topic: str = "anomaly_mask") -> list[Image]:
        return self.out[(ns, topic)].messages()

    def answer_for(self, ns: str, frame_id: str, topic: str = "anomaly_mask") -> Image:
        return wait_until(lambda: next((m for m in self.answers(ns, topic) if m.header.frame_id == frame_id), None),
                          ANSWER_TIMEOUT, f"/{ns}/{topic} answer to frame {frame_id}")

    def counters(self, ns: str) -> dict[str, int]:
        values = wait_until(lambda: diagnostics_values(self.diag.messages(), f"/{ns}/anomaly_node"),
                            ANSWER_TIMEOUT, f"/diagnostics from /{ns}/anomaly_node")
        return {k: int(v) for k, v in values.items() if v.isdigit()}

    def settled(self, ns: str) -> dict[str, int]:
        """Counters once every message sent arrived and is accounted for (processed, dropped or rejected)."""
        received = self.sent[ns]

        def done() -> dict[str, int] | None:
            c = self.counters(ns)
            accounted = (c["processed"] + c["dropped_replaced"] + c["dropped_old"] + c["rejected"] + c["errors"]
                         + c["skipped_disabled"])
            return c if c["received"] == received and accounted == received else None
        return wait_until(done, ANSWER_TIMEOUT, f"/{ns} diagnostics accounting for {received} messages")


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)) % 1_000_000_000)


def image_msg(rgb: np.ndarray, encoding: str, frame_id: str, when: Time) -> Image:
    pixels = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)}[encoding]
    msg = Image()
    msg.header.stamp, msg.header.frame_id = when, frame_id
    msg.height, msg.width, msg.encoding = rgb.shape[0], rgb.shape[1], encoding
    msg.step = rgb.shape[1] * (1 if pixels.ndim == 2 else 3)
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def jpeg_msg(rgb: np.ndarray, frame_id: str, when: Time) -> CompressedImage:
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    msg = CompressedImage()
    msg.header.stamp, msg.header.frame_id, msg.format = when, frame_id, "jpeg"
    msg.data = data.tobytes()
    return msg


@pytest.fixture(scope="module")
def nodes(tmp_path_factory) -> Iterator[tuple[Harness, dict[str, NodeProcess]]]:
    domain = domain_id(0)
    work = tmp_path_factory.mktemp("nodes")
    procs = {
        "raw": NodeProcess({**COMMON, "use_sim_time": True}, domain, work / "raw", ros_args=("-r", "__ns:=/raw")),
        "jpeg": NodeProcess({**COMMON, "input_transport": "compressed"}, domain, work / "jpeg",
                            ros_args=("-r", "__ns:=/jpeg")),
    }
    peer = Peer("tester", domain)
    harness = Harness(peer)
    try:
        for ns, pub in (("raw", harness.image_pub), ("jpeg", harness.jpeg_pub)):
            wait_until(lambda: pub.get_subscription_count() > 0 or not procs[ns].alive(), START_TIMEOUT,
                       f"/{ns}/anomaly_node to subscribe")
            assert procs[ns].alive(), procs[ns].output()
        for key in harness.out:
            wait_until(lambda: peer.node.count_publishers(f"/{key[0]}/{key[1]}") > 0, START_TIMEOUT, f"{key} publisher")
        wait_until(harness.enable.service_is_ready, START_TIMEOUT, "the ~/enable service")
        yield harness, procs
    finally:
        peer.close()
        codes = {ns: proc.stop() for ns, proc in procs.items()}
        assert codes == {"raw": 0, "jpeg": 0}, {ns: proc.output()[-3000:] for ns, proc in procs.items()}


def check_outputs(harness: Harness, ns: str, sent: Image | CompressedImage, size: tuple[int, int]) -> np.ndarray:
    """Mask, score and overlay answers for ``sent``: exact header, input size, encodings, mask = score >= threshold."""
    frame_id = sent.header.frame_id
    mask, score, overlay = (harness.answer_for(ns, frame_id, t) for t in ("anomaly_mask", "anomaly_score",
                                                                         "anomaly_overlay"))
    for out, encoding in ((mask, "mono8"), (score, "32FC1"), (overlay, "bgr8")):
        assert out.header.stamp == sent.header.stamp and out.header.frame_id == frame_id
        assert (out.height, out.width, out.encoding) == (*size, encoding)
    score_map = fields_to_array(score)
    mask_map = fields_to_array(mask)
    assert score_map.min() >= 0.0 and score_map.max() <= 1.0
    np.testing.assert_array_equal(mask_map, np.where(score_map >= COMMON["threshold"], 255, 0))
    return score_map


def test_outputs_echo_the_header_for_rgb8_bgr8_mono8_and_jpeg(nodes, road_frame):
    harness, _ = nodes
    size = road_frame.shape[:2]
    scores = {}
    for encoding in ("rgb8", "bgr8", "mono8"):
        sent = image_msg(road_frame, encoding, f"cam_{encoding}", stamp(harness.sim_now()))
        harness.send("raw", sent)
        scores[encoding] = check_outputs(harness, "raw", sent, size)
    np.testing.assert_array_equal(scores["rgb8"], scores["bgr8"])  # same pixels, same mask and score
    assert not np.array_equal(scores["rgb8"], scores["mono8"])    # grey input really was grey
    sent = jpeg_msg(road_frame, "cam_jpeg", stamp(time.time()))
    harness.send("jpeg", sent)
    check_outputs(harness, "jpeg", sent, size)
    info = harness.peer.node.get_publishers_info_by_topic("/raw/anomaly_mask")
    assert [i.qos_profile.reliability for i in info] == [ReliabilityPolicy.RELIABLE]
    sub_info = harness.peer.node.get_subscriptions_info_by_topic("/raw/image")
    assert [i.qos_profile.reliability for i in sub_info] == [ReliabilityPolicy.RELIABLE]  # qos_reliability override


def test_outputs_follow_a_change_of_input_size(nodes, road_frame):
    """The node reuses its output buffers: a new size reallocates them and no stale pixel survives."""
    harness, _ = nodes
    small = cv2.resize(road_frame, (48, 30), interpolation=cv2.INTER_AREA)
    for index, frame in enumerate((small, road_frame)):
        sent = image_msg(frame, "rgb8", f"resize{index}", stamp(harness.sim_now()))
        harness.send("raw", sent)
        score_map = check_outputs(harness, "raw", sent, frame.shape[:2])
        overlay = fields_to_array(harness.answer_for("raw", sent.header.frame_id, "anomaly_overlay"))
        np.testing.assert_array_equal(overlay, make_overlay(frame, score_map >= COMMON["threshold"], 0.5))


def test_burst_leaves_no_backlog_and_stale_frames_are_dropped(nodes, road_frame):
    harness, procs = nodes
    # the default on a CPU with two or more: two workers, which must still answer in the order the frames came
    assert f"{2 if len(allowed_cpus()) >= 2 else 1} frame(s) in flight" in procs["raw"].output()
    before = harness.settled("raw")
    already = len(harness.answers("raw"))
    for i in range(50):
        harness.send("raw", image_msg(road_frame, "rgb8", f"burst{i:02d}", stamp(harness.sim_now())))
    harness.answer_for("raw", "burst49")  # the newest frame is always answered
    after = harness.settled("raw")
    answered = [m.header.frame_id for m in harness.answers("raw")[already:]]
    assert answered == sorted(answered) and answered[-1] == "burst49"
    assert after["processed"] - before["processed"] == len(answered) < 50
    assert after["dropped_replaced"] - before["dropped_replaced"] == 50 - len(answered)
    # stale: stamped 60 s (of sim time) ago, beyond max_age_ms
    for i in range(3):
        harness.send("raw", image_msg(road_frame, "rgb8", f"stale{i}", stamp(harness.sim_now() - 60.0)))
        harness.settled("raw")
    fresh = image_msg(road_frame, "rgb8", "fresh", stamp(harness.sim_now()))
    harness.send("raw", fresh)
    harness.answer_for("raw", "fresh")
    final = harness.settled("raw")
    assert final["dropped_old"] - after["dropped_old"] == 3
    assert not any(m.header.frame_id.startswith("stale") for m in harness.answers("raw"))


def malformed_images(count: int, when: Time) -> list[Image]:
    kinds = [dict(encoding="yuv9000"), dict(data=bytes(10)), dict(height=0, width=0, step=0, data=b""),
             dict(step=5)]
    out = []
    for i in range(count):
        spec = dict(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
        spec.update(kinds[i % len(kinds)])
        msg = Image()
        msg.header.stamp, msg.header.frame_id = when, f"bad{i}"
        msg.height, msg.width, msg.encoding, msg.step, msg.data = (spec["height"], spec["width"], spec["encoding"],
                                                                    spec["step"], spec["data"])
        out.append(msg)
    return out


def test_thousand_malformed_messages_are_counted_and_the_node_keeps_answering(nodes, road_frame):
    harness, procs = nodes
    rng = np.random.default_rng(3)
    raw_before, jpeg_before = harness.settled("raw"), harness.settled("jpeg")
    for msg in malformed_images(800, stamp(harness.sim_now())):
        harness.send("raw", msg)
    for i in range(200):  # garbage JPEG: right signature, undecodable body
        garbage = CompressedImage()
        garbage.header.frame_id, garbage.format = f"garbage{i}", "jpeg"
        garbage.header.stamp = stamp(time.time())
        garbage.data = b"\xff\xd8" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
        harness.send("jpeg", garbage)
    raw_after = harness.settled("raw")
    jpeg_after = harness.settled("jpeg")
    assert raw_after["rejected"] - raw_before["rejected"] == 800
    assert raw_after["processed"] == raw_before["processed"]
    # garbage JPEGs pass the O(1) signature check in the callback; each is then rejected by the decoder or
    # replaced in the newest-frame slot first (dropped): every one is counted, none is answered.
    jpeg_counted = sum(jpeg_after[k] - jpeg_before[k] for k in ("rejected", "dropped_replaced"))
    assert jpeg_counted == 200 and jpeg_after["rejected"] > jpeg_before["rejected"]
    assert jpeg_after["processed"] == jpeg_before["processed"]
    assert all(proc.alive() for proc in procs.values())
    good = image_msg(road_frame, "rgb8", "after_garbage", stamp(harness.sim_now()))
    harness.send("raw", good)
    harness.answer_for("raw", "after_garbage")
    harness.send("jpeg", jpeg_msg(road_frame, "after_garbage", stamp(time.time())))
    harness.answer_for("jpeg", "after_garbage")
    warnings = procs["raw"].output().count("rejected input message")
    assert 1 <= warnings < 50  # throttled, not one line per message


def test_enable_service_pauses_and_resumes(nodes, road_frame):
    harness, _ = nodes
    for flag in (False, True):
        request = SetBool.Request()
        request.data = flag
        assert answer(lambda: harness.enable.call_async(request), "~/enable", ANSWER_TIMEOUT).success
        if not flag:
            before = harness.settled("raw")
            harness.send("raw", image_msg(road_frame, "rgb8", "while_disabled", stamp(harness.sim_now())))
            after = harness.settled("raw")
            assert after["skipped_disabled"] - before["skipped_disabled"] == 1
    harness.send("raw", image_msg(road_frame, "rgb8", "re_enabled", stamp(harness.sim_now())))
    harness.answer_for("raw", "re_enabled")
    assert not any(m.header.frame_id == "while_disabled" for m in harness.answers("raw"))


def test_a_publisher_incompatible_with_a_forced_qos_is_logged_with_what_to_set(nodes):
    harness, procs = nodes
    best_effort = harness.peer.publisher(Image, "/raw/image", depth=1, reliable=False)  # /raw forces reliable
    try:
        line = wait_until(lambda: next((line for line in procs["raw"].output().splitlines()
                                        if "QoS incompatible" in line), None), ANSWER_TIMEOUT, "the QoS warning")
    finally:
        harness.peer.node.destroy_publisher(best_effort)
    assert "input /raw/image:" in line and "reliable subscription (policy RELIABILITY)" in line
    assert "set qos_reliability: auto (or best_effort)" in line


def test_missing_or_corrupt_model_file_or_bad_parameter_stops_start_up_with_one_message(tmp_path: Path):
    missing = tmp_path / "no_such_model.pt"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    console_script = (str(Path(sys.executable).parent / "anomaly_node"),)  # the installed entry point
    cases = {  # parameters, the one line expected, whether to start the installed console script
        "missing": ({"model_path": str(missing), "score": "ensemble"}, f"model file not found: {missing}", False),
        "corrupt": ({"model_path": str(corrupt), "score": "ensemble"}, f"cannot load model file {corrupt}", True),
        # outside the descriptor's range: refused by ROS at declaration, worded like every other refusal
        "range": ({"threshold": 1.5}, "parameter 'threshold' = 1.5 is invalid: expected a number in [0, 1]", False),
    }
    procs = {name: NodeProcess({**COMMON, **params}, domain_id(1 + i), tmp_path / name,
                               **({"command": console_script} if installed else {}))
             for i, (name, (params, _, installed)) in enumerate(cases.items())}
    assert_refused_in_one_line(procs, {name: case[1] for name, case in cases.items()}, START_TIMEOUT)


def test_node_process_env_adds_variables_but_keeps_discovery_on_loopback(tmp_path: Path) -> None:
    show = "import os; print(os.environ['MGCDA_PROBE'], os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'], " \
           "os.environ['ROS_DOMAIN_ID'])"
    process = NodeProcess({}, 42, tmp_path, command=(sys.executable, "-c", show),
                          env={"MGCDA_PROBE": "asked", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_DOMAIN_ID": "7"})
    assert process.wait_exit(30) == 0
    process.stop()
    assert process.output().split() == ["asked", "LOCALHOST", "42"]


def _threads_taking_sigint(pid: int) -> list[int]:
    """Thread ids of ``pid`` other than its main thread that do not block SIGINT (so a signal sent there lands)."""
    taking = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        blocked = next(int(line.split()[1], 16) for line in (task / "status").read_text().splitlines()
                       if line.startswith("SigBlk:"))
        if tid != pid and not blocked & (1 << (signal.SIGINT - 1)):
            taking.append(tid)
    return taking


@pytest.mark.skipif(SYS_TGKILL is None, reason=f"tgkill's syscall number is not known here ({os.uname().machine})")
def test_ctrl_c_delivered_to_a_middleware_thread_still_stops_the_node(tmp_path: Path) -> None:
    # The kernel may hand a process's SIGINT to any thread that does not block it, e.g. one of Fast DDS's; the
    # node must still shut down cleanly (an untimed join in the main thread never woke up to run the handler).
    # Started with SIGINT ignored, as a script's `&` leaves it: the node still takes Ctrl-C.
    domain = domain_id(9)
    peer = Peer("sigint_watch", domain)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child
    try:
        proc = NodeProcess(COMMON, domain, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    status = Path(f"/proc/{proc.process.pid}/status").read_text()
    assert int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16) & 2
    try:
        wait_until(lambda: peer.node.count_publishers("/anomaly_mask") > 0 or not proc.alive(), START_TIMEOUT,
                   "the node's outputs")
        assert proc.alive(), proc.output()
        wait_until(lambda: "running" in proc.output(), START_TIMEOUT, "the node to report running")
        (tid, *_) = _threads_taking_sigint(proc.process.pid)
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(SYS_TGKILL, proc.process.pid, tid, signal.SIGINT) == 0, ctypes.get_errno()
        assert proc.wait_exit(timeout=60.0) == 0, proc.output()[-3000:]
        assert "Traceback" not in proc.output()
    finally:
        peer.close()
        proc.stop()
