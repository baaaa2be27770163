"""``anomaly_node`` with its default input QoS against camera-like publishers in another process, and what an
integrator changes and reads at run time: parameters through the parameter services, diagnostics that warn and
clear, log lines (also on /rosout). Real rclpy nodes in separate processes, DDS on loopback.

Two nodes start once for the module: ``/rel`` (fed by a reliable 1280x720 publisher, as image_transport
publishes) and ``/be`` (a best-effort 640x480 one). Neither sets ``qos_reliability``: the default must deliver.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from service_calls import answer
from std_srvs.srv import SetBool

from mgcda_core.utils.images import read_rgb
from mgcda_ros.conversions import fields_to_array
from mgcda_ros.ros_process import Inbox, NodeProcess, Peer, wait_until

pytestmark = pytest.mark.ros

ASSET = Path(__file__).resolve().parents[1] / "mgcda_ros" / "assets" / "road_anomaly" / "frames"
# small network input and a fast training-free score; the QoS parameters keep their defaults
# max_age_ms generous: on a busy machine a fresh frame may wait seconds for the worker
PARAMS = {"input_width": 128, "input_height": 64, "score": "msp", "threshold": 0.3, "max_age_ms": 20000.0,
          "input_timeout_s": 2.0, "diagnostics_window_s": 3.0, "warn_throttle_s": 1.0}
START_TIMEOUT = 600.0  # two nodes load concurrently; exporting to ONNX took minutes on a busy 2-core machine
ANSWER_TIMEOUT = 180.0


def stamp(seconds: float) -> Time:
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)) % 1_000_000_000)


def frame(rgb: np.ndarray, frame_id: str, age_s: float = 0.0) -> Image:
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp(time.time() - age_s), frame_id
    msg.height, msg.width, msg.encoding, msg.step = rgb.shape[0], rgb.shape[1], "rgb8", rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg


class Rig:
    """This process's side: one camera publisher per node, output and diagnostics subscribers, /rosout."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        road = read_rgb(ASSET / "animals22_red_fox_on_road.jpg")
        self.images = {size: np.ascontiguousarray(cv2.resize(road, size, interpolation=cv2.INTER_AREA))
                       for size in ((1280, 720), (640, 480), (160, 96))}
        self.camera = {"rel": peer.publisher(Image, "/rel/image", depth=1, reliable=True),
                       "be": peer.publisher(Image, "/be/image", depth=1, reliable=False)}
        self.out = {(ns, topic): peer.subscribe(Image, f"/{ns}/{topic}", depth=100)
                    for ns in ("rel", "be") for topic in ("anomaly_mask", "anomaly_score", "anomaly_overlay")}
        self.diag = peer.subscribe(DiagnosticArray, "/diagnostics", depth=1000)
        self.rosout = Inbox()
        rosout_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        peer.node.create_subscription(Log, "/rosout", self.rosout, rosout_qos)
        self.params = AsyncParameterClient(peer.node, "/rel/anomaly_node")
        self.enable = peer.node.create_client(SetBool, "/rel/anomaly_node/enable")

    def answer(self, ns: str, frame_id: str, topic: str = "anomaly_mask") -> Image | None:
        return next((m for m in self.out[(ns, topic)].messages() if m.header.frame_id == frame_id), None)

    def wait_answer(self, ns: str, frame_id: str, topic: str = "anomaly_mask") -> Image:
        return wait_until(lambda: self.answer(ns, frame_id, topic), ANSWER_TIMEOUT, f"/{ns}/{topic} for {frame_id}")

    def send_and_wait(self, ns: str, msg: Image, topic: str = "anomaly_mask") -> Image:
        self.camera[ns].publish(msg)
        return self.wait_answer(ns, msg.header.frame_id, topic)

    def statuses(self, ns: str) -> list[DiagnosticStatus]:
        return [s for array in self.diag.messages() for s in array.status if f"/{ns}/anomaly_node" in s.name]

    def status_after(self, ns: str, since: float, predicate: Any, what: str) -> DiagnosticStatus:
        """The first status of /<ns> received after ``since`` (monotonic) that satisfies ``predicate``."""
        def found() -> DiagnosticStatus | None:
            items = [(t, a) for t, a in self.diag.items if t > since]
            return next((s for _, a in items for s in a.status
                         if f"/{ns}/anomaly_node" in s.name and predicate(s)), None)
        return wait_until(found, ANSWER_TIMEOUT, what)

    def counters(self, ns: str) -> dict[str, int]:
        status = wait_until(lambda: (self.statuses(ns) or [None])[-1], ANSWER_TIMEOUT, f"/{ns} diagnostics")
        return {kv.key: int(kv.value) for kv in status.values if kv.value.isdigit()}

    def counter_reaches(self, ns: str, name: str, value: int) -> dict[str, int]:
        def reached() -> dict[str, int] | None:
            counters = self.counters(ns)
            return counters if counters[name] >= value else None
        return wait_until(reached, ANSWER_TIMEOUT, f"/{ns} {name} >= {value}")

    def call(self, send: Callable[[], Any]) -> Any:
        return answer(send, "a service of /rel/anomaly_node", ANSWER_TIMEOUT)

    def set(self, name: str, value: Any) -> Any:
        return self.call(lambda: self.params.set_parameters([Parameter(name, value=value)])).results[0]

    def get(self, name: str) -> Any:
        return parameter_value_to_python(self.call(lambda: self.params.get_parameters([name])).values[0])


def domain_id() -> int:
    return (int(os.environ["ROS_DOMAIN_ID"]) + 7) % 200


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Iterator[tuple[Rig, dict[str, NodeProcess]]]:
    domain = domain_id()
    work = tmp_path_factory.mktemp("live")
    peer = Peer("camera_rig", domain)  # first: it hears the nodes' start-up on /rosout and /diagnostics
    rig = Rig(peer)
    procs = {"rel": NodeProcess(PARAMS, domain, work / "rel", ros_args=("-r", "__ns:=/rel")),
             # torch: no ONNX export at start-up (the /rel node's auto choice is what /rosout must carry)
             "be": NodeProcess({**PARAMS, "backend": "torch", "treshold": 0.3}, domain, work / "be",
                               ros_args=("-r", "__ns:=/be"))}
    try:
        for ns, proc in procs.items():
            wait_until(lambda: rig.camera[ns].get_subscription_count() > 0 or not proc.alive(), START_TIMEOUT,
                       f"/{ns}/anomaly_node to subscribe")
            assert proc.alive(), proc.output()
        wait_until(lambda: rig.params.services_are_ready(), START_TIMEOUT, "the parameter services")
        yield rig, procs
    finally:
        peer.close()
        codes = {ns: proc.stop() for ns, proc in procs.items()}
        assert codes == {"rel": 0, "be": 0}, {ns: proc.output()[-3000:] for ns, proc in procs.items()}


def subscription_reliability(rig: Rig, topic: str) -> ReliabilityPolicy | None:
    info = rig.peer.node.get_subscriptions_info_by_topic(topic)
    return info[0].qos_profile.reliability if len(info) == 1 else None


def camera_until_answered(rig: Rig, ns: str, image: np.ndarray, name: str) -> Image:
    """Publish a frame every 0.3 s, like a camera, until the node answers one of them."""
    sent: list[str] = []

    def answered() -> Image | None:
        for frame_id in sent:
            if (mask := rig.answer(ns, frame_id)) is not None:
                return mask
        sent.append(f"{name}{len(sent)}")
        rig.camera[ns].publish(frame(image, sent[-1]))
        return None
    return wait_until(answered, ANSWER_TIMEOUT, f"a mask from /{ns} for a {name} frame", poll=0.3)


def test_default_qos_follows_a_reliable_1280x720_camera(rig):
    rig, _ = rig
    # with a reliable publisher discovered, the default (auto) subscribes reliable
    wait_until(lambda: subscription_reliability(rig, "/rel/image") == ReliabilityPolicy.RELIABLE, ANSWER_TIMEOUT,
               "/rel/anomaly_node to subscribe reliable")
    mask = camera_until_answered(rig, "rel", rig.images[(1280, 720)], "hd")
    assert (mask.height, mask.width, mask.encoding) == (720, 1280, "mono8")


def test_default_qos_follows_a_best_effort_640x480_camera(rig):
    rig, _ = rig
    assert subscription_reliability(rig, "/be/image") == ReliabilityPolicy.BEST_EFFORT
    mask = camera_until_answered(rig, "be", rig.images[(640, 480)], "vga")
    assert (mask.height, mask.width) == (480, 640)


def test_start_up_reports_unknown_parameter_names(rig):
    _, procs = rig
    assert "ignoring unknown parameter(s) treshold set for this node" in procs["be"].output()
    assert "ignoring unknown parameter" not in procs["rel"].output()


def test_core_log_records_reach_rosout(rig):
    rig, _ = rig
    # mgcda_core's runtime factory logs its choice through Python logging while the node loads
    record = wait_until(lambda: next((m for m in rig.rosout.messages() if m.name == "rel.anomaly_node"
                                      and "[mgcda_core.runtime.factory] runtime auto ->" in m.msg), None),
                        ANSWER_TIMEOUT, "the runtime choice on /rosout")
    assert record.level == Log.INFO


def test_silence_warns_naming_the_resolved_topic_and_clears(rig):
    rig, procs = rig
    since = time.monotonic()
    warned = rig.status_after("be", since, lambda s: s.level == DiagnosticStatus.WARN, "/be WARN while silent")
    assert warned.message.startswith("no frame on /be/image for ")
    # the silence is logged once it exceeds input_timeout_s (2 s); how much more depends on the timer and the load
    logged = re.search(r"no frame on /be/image for (\d+) s; 1 publisher\(s\) discovered on it", procs["be"].output())
    assert logged is not None and int(logged.group(1)) >= 2
    be_params = AsyncParameterClient(rig.peer.node, "/be/anomaly_node")
    assert answer(lambda: be_params.set_parameters([Parameter("input_timeout_s", value=600.0)]),
                  "/be/anomaly_node's parameter service", ANSWER_TIMEOUT).results[0].successful
    since = time.monotonic()
    rig.status_after("be", since, lambda s: s.level == DiagnosticStatus.OK and s.message == "running",
                     "/be OK once silence is allowed")


def test_threshold_changes_at_run_time_and_bad_values_are_refused_with_the_reason(rig):
    rig, _ = rig
    small = rig.images[(160, 96)]
    assert rig.set("threshold", 0.0).successful
    mask = fields_to_array(rig.send_and_wait("rel", frame(small, "thr0")))
    assert (mask == 255).all()  # every calibrated score is >= 0
    assert rig.set("threshold", 1).successful  # an integer for a double is accepted and stored as a double
    assert rig.get("threshold") == 1.0 and isinstance(rig.get("threshold"), float)
    mask = fields_to_array(rig.send_and_wait("rel", frame(small, "thr1")))
    score = fields_to_array(rig.wait_answer("rel", "thr1", "anomaly_score"))
    np.testing.assert_array_equal(mask, np.where(score >= 1.0, 255, 0))
    assert not (mask == 255).all()
    refused = {value: rig.set("threshold", value) for value in (7.5, "abc")}
    assert not refused[7.5].successful and "threshold" in refused[7.5].reason and "1" in refused[7.5].reason
    assert not refused["abc"].successful
    assert refused["abc"].reason == "parameter 'threshold' = 'abc' is invalid: expected a value of type float, got str"
    assert rig.get("threshold") == 1.0
    width = rig.set("input_width", 256)
    assert not width.successful and "read-only" in width.reason
    assert rig.set("threshold", 0.3).successful


def test_parameter_descriptors_are_one_per_parameter(rig):
    rig, _ = rig
    names = ["threshold", "input_width", "warn_throttle_s", "publish_overlay"]
    described = dict(zip(names, rig.call(lambda: rig.params.describe_parameters(names)).descriptors, strict=True))
    assert [d.name for d in described.values()] == names
    assert len({d.description for d in described.values()}) == len(names)
    assert described["threshold"].floating_point_range[0].to_value == 1.0 and not described["threshold"].read_only
    assert described["input_width"].read_only and described["input_width"].integer_range[0].step == 32


def test_publish_flags_apply_to_the_next_frame(rig):
    rig, _ = rig
    small = rig.images[(160, 96)]
    assert rig.set("publish_score", False).successful
    for name in ("noscore0", "noscore1"):  # the overlay goes out after the score would have
        rig.send_and_wait("rel", frame(small, name), "anomaly_overlay")
    assert rig.answer("rel", "noscore0", "anomaly_score") is None
    assert rig.answer("rel", "noscore1", "anomaly_score") is None
    assert rig.set("publish_score", True).successful
    rig.send_and_wait("rel", frame(small, "score_again"), "anomaly_score")


def test_enable_parameter_and_service_are_one_switch(rig):
    rig, _ = rig
    small = rig.images[(160, 96)]
    before = rig.counters("rel")
    assert rig.set("enable", False).successful
    rig.camera["rel"].publish(frame(small, "while_disabled"))
    rig.counter_reaches("rel", "skipped_disabled", before["skipped_disabled"] + 1)
    request = SetBool.Request()
    request.data = True
    response = rig.call(lambda: rig.enable.call_async(request))
    assert response.success and rig.get("enable") is True
    rig.send_and_wait("rel", frame(small, "enabled_again"))
    assert rig.answer("rel", "while_disabled") is None


def test_stale_frames_warn_with_the_clock_offset_and_the_hint_then_clear(rig):
    rig, procs = rig
    small = rig.images[(160, 96)]
    assert rig.set("input_timeout_s", 600.0).successful  # only the staleness concern here
    before = rig.counters("rel")
    since = time.monotonic()
    rig.camera["rel"].publish(frame(small, "stale", age_s=60.0))
    rig.counter_reaches("rel", "dropped_old", before["dropped_old"] + 1)
    warned = rig.status_after("rel", since, lambda s: s.level == DiagnosticStatus.WARN, "/rel WARN for stale")
    # 60 s plus however long delivery took on this machine
    assert "1 frame(s) dropped as stale" in warned.message and re.search(r"stamped 6\d\.\d s before", warned.message)
    log = procs["rel"].output()
    line = next(line for line in log.splitlines() if "dropping stale frames" in line
                and re.search(r"stamped 6\d\.\d+ s before", line))
    assert "ros2 bag play --clock" in line and "use_sim_time:=true" in line
    assert "max_age_ms:=0" in line
    rig.status_after("rel", time.monotonic(), lambda s: s.level == DiagnosticStatus.OK, "/rel OK after the window")
    assert rig.set("max_age_ms", 0.0).successful  # the check off: the same old stamp is answered
    rig.send_and_wait("rel", frame(small, "old_but_allowed", age_s=60.0))
    assert rig.answer("rel", "stale") is None
    assert rig.set("max_age_ms", PARAMS["max_age_ms"]).successful


def test_rejected_input_raises_warn_for_the_window_only(rig):
    rig, _ = rig
    bad = frame(rig.images[(160, 96)], "bad")
    bad.step = 5  # shorter than a row
    since = time.monotonic()
    rig.camera["rel"].publish(bad)
    warned = rig.status_after("rel", since, lambda s: s.level == DiagnosticStatus.WARN, "/rel WARN for rejection")
    assert "input(s) rejected" in warned.message and "step 5 is shorter than one rgb8 row" in warned.message
    rig.status_after("rel", time.monotonic(), lambda s: s.level == DiagnosticStatus.OK, "/rel OK after the window")
