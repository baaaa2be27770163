"""``anomaly_lifecycle_node`` driven through its lifecycle services from another process: configure loads the
model (diagnostics say "loading" meanwhile), activate subscribes and answers frames, deactivate pauses,
cleanup frees. Real rclpy nodes in separate processes, DDS on loopback."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import Image
from service_calls import change_state, lifecycle_state

from mgcda_ros.ros_process import NodeProcess, Peer, diagnostics_values, wait_until
from mgcda_ros.transport import OPT_OUT_ENV, PROFILE_ENV, installed_profile

pytestmark = pytest.mark.ros

PARAMS = {"input_width": 128, "input_height": 64, "score": "msp", "max_age_ms": 0.0, "backend": "torch"}
NODE = "/managed/anomaly_node"
START_TIMEOUT = 600.0
ANSWER_TIMEOUT = 600.0  # configure loads the model (minutes on a busy 2-core machine)


class Managed:
    """Lifecycle clients, a camera publisher and output/diagnostics subscribers for the managed node."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.get_state = peer.node.create_client(GetState, f"{NODE}/get_state")
        self.change_state = peer.node.create_client(ChangeState, f"{NODE}/change_state")
        self.camera = peer.publisher(Image, "/managed/image", depth=1)
        self.masks = peer.subscribe(Image, "/managed/anomaly_mask")
        self.diag = peer.subscribe(DiagnosticArray, "/diagnostics", depth=1000)
        self.sent = 0

    def state(self) -> str:
        return lifecycle_state(self.get_state, ANSWER_TIMEOUT)

    def transition(self, transition_id: int) -> bool:
        return change_state(self.change_state, self.get_state, transition_id, ANSWER_TIMEOUT)

    def diagnostics_state(self) -> str | None:
        values = diagnostics_values(self.diag.messages(), NODE)
        return values["state"] if values else None

    def frame_answered(self) -> bool:
        """Send one 48x64 frame and wait for its mask."""
        self.sent += 1
        msg = Image(height=48, width=64, encoding="mono8", step=64)
        msg.header.frame_id = f"f{self.sent}"
        msg.data = np.full((48, 64), 90, np.uint8).tobytes()
        self.camera.publish(msg)
        wait_until(lambda: any(m.header.frame_id == msg.header.frame_id for m in self.masks.messages()),
                   ANSWER_TIMEOUT, f"the mask for frame {msg.header.frame_id}")
        return True

    def subscribed(self) -> int:
        return self.camera.get_subscription_count()


@pytest.fixture(scope="module")
def managed(tmp_path_factory) -> Iterator[tuple[Managed, NodeProcess]]:
    domain = (int(os.environ["ROS_DOMAIN_ID"]) + 13) % 200
    peer = Peer("sequencer", domain)
    rig = Managed(peer)
    proc = NodeProcess(PARAMS, domain, tmp_path_factory.mktemp("managed"),
                       command=(sys.executable, "-m", "mgcda_ros.lifecycle_node"), ros_args=("-r", "__ns:=/managed"),
                       drop_env=(PROFILE_ENV, OPT_OUT_ENV))  # the executable's own default: the shipped profile
    try:
        wait_until(lambda: (rig.get_state.service_is_ready() and rig.change_state.service_is_ready())
                   or not proc.alive(), START_TIMEOUT, "the lifecycle services")
        assert proc.alive(), proc.output()
        yield rig, proc
    finally:
        peer.close()
        code = proc.stop()
        assert code == 0, proc.output()[-3000:]


def test_lifecycle_transitions_load_subscribe_pause_and_free(managed):
    rig, proc = managed
    assert rig.state() == "unconfigured"
    # diagnostics exist before the model: this also proves the diagnostics subscriber is matched
    wait_until(lambda: rig.diagnostics_state() == "unconfigured", ANSWER_TIMEOUT, "unconfigured diagnostics")
    assert rig.peer.node.count_publishers("/managed/anomaly_mask") == 0 and rig.subscribed() == 0

    since = time.monotonic()
    assert rig.transition(Transition.TRANSITION_CONFIGURE)
    states = [diagnostics_values([array], NODE)["state"] for t, array in rig.diag.items if t > since
              and diagnostics_values([array], NODE)]
    assert "loading" in states  # published when configure started, before the model was loaded
    assert rig.state() == "inactive"
    wait_until(lambda: rig.peer.node.count_publishers("/managed/anomaly_mask") == 1, ANSWER_TIMEOUT, "outputs")
    assert rig.subscribed() == 0  # inactive: no input yet

    assert rig.transition(Transition.TRANSITION_ACTIVATE) and rig.state() == "active"
    wait_until(rig.subscribed, ANSWER_TIMEOUT, "the input subscription")
    assert rig.frame_answered()

    assert rig.transition(Transition.TRANSITION_DEACTIVATE) and rig.state() == "inactive"
    wait_until(lambda: rig.subscribed() == 0, ANSWER_TIMEOUT, "the input subscription to go")
    wait_until(lambda: rig.diagnostics_state() == "inactive", ANSWER_TIMEOUT, "inactive diagnostics")

    assert rig.transition(Transition.TRANSITION_ACTIVATE)
    wait_until(rig.subscribed, ANSWER_TIMEOUT, "the input subscription again")
    assert rig.frame_answered()

    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    assert rig.transition(Transition.TRANSITION_CLEANUP) and rig.state() == "unconfigured"
    wait_until(lambda: rig.peer.node.count_publishers("/managed/anomaly_mask") == 0, ANSWER_TIMEOUT,
               "the outputs to go")
    values = wait_until(lambda: (v := diagnostics_values(rig.diag.messages(), NODE)) and v["state"] == "unconfigured"
                        and v, ANSWER_TIMEOUT, "unconfigured diagnostics after cleanup")
    assert values["backend"] == "none"
    assert "Traceback" not in proc.output()
    # run by hand (no launch file), the managed node applies the same Fast DDS profile as anomaly_node
    assert f"transport: Fast DDS profile for large images: {installed_profile()}" in proc.output()


def test_configure_with_a_missing_model_fails_and_stays_unconfigured(tmp_path: Path):
    domain = (int(os.environ["ROS_DOMAIN_ID"]) + 14) % 200
    peer = Peer("sequencer_bad", domain)
    rig_bad = Managed(peer)
    missing = tmp_path / "missing.pt"
    proc = NodeProcess({**PARAMS, "model_path": str(missing), "score": "ensemble"}, domain, tmp_path / "bad",
                       command=(sys.executable, "-m", "mgcda_ros.lifecycle_node"), ros_args=("-r", "__ns:=/managed"))
    try:
        wait_until(lambda: rig_bad.change_state.service_is_ready() or not proc.alive(), START_TIMEOUT,
                   "the lifecycle services")
        assert not rig_bad.transition(Transition.TRANSITION_CONFIGURE)
        assert rig_bad.state() == "unconfigured"
        assert f"configure failed: model file not found: {missing}" in proc.output()
    finally:
        peer.close()
        assert proc.stop() == 0, proc.output()[-3000:]
