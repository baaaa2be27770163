"""The Fast DDS profile for large images: the file, when the executable and the launch file apply it, and a real
camera -> node -> subscriber exchange of a 1280x720 frame with it applied (separate processes, DDS on loopback,
checked on the wire where this process may capture packets)."""

from __future__ import annotations

import ast
import os
import socket
import struct
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mgcda_ros.transport import (
    OPT_OUT_ENV,
    PROFILE_ENV,
    PROFILE_NAME,
    apply_default_profile,
    decide_profile,
    installed_profile,
    profile_environment,
)

# 1920x1080 outputs: mask mono8 + score 32FC1 + overlay bgr8 per frame
FULL_HD_FRAME_BYTES = 1920 * 1080 * (1 + 4 + 3)
START_TIMEOUT = 400.0  # node start-up took 75 s at load average 17 on 2 cores
ANSWER_TIMEOUT = 60.0


def _profile_tree(repo_root: Path) -> ET.Element:
    return ET.parse(repo_root / "config" / PROFILE_NAME).getroot()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find_all(root: ET.Element, name: str) -> list[ET.Element]:
    return [element for element in root.iter() if _local(element.tag) == name]


def _child_text(element: ET.Element, name: str) -> str | None:
    return next((child.text for child in element if _local(child.tag) == name), None)


def test_profile_is_valid_xml_with_a_large_shm_segment_and_udpv4_as_the_default_participant(repo_root: Path):
    root = _profile_tree(repo_root)
    descriptors = {_child_text(d, "transport_id"): d for d in _find_all(root, "transport_descriptor")}
    kinds = {_child_text(d, "type"): tid for tid, d in descriptors.items()}
    assert set(kinds) == {"SHM", "UDPv4"}
    segment = int(_child_text(descriptors[kinds["SHM"]], "segment_size") or 0)
    assert segment >= 3 * FULL_HD_FRAME_BYTES, "three 1920x1080 frames of outputs must fit in flight"
    assert segment <= 256 * 2**20, "a segment per publishing process lives in /dev/shm: keep it modest"
    participants = _find_all(root, "participant")
    assert len(participants) == 1 and participants[0].get("is_default_profile") == "true"
    used = [t.text for t in _find_all(participants[0], "transport_id")]
    assert used == [kinds["SHM"], kinds["UDPv4"]], "shared memory first, UDPv4 kept for remote subscribers"
    assert [t.text for t in _find_all(participants[0], "useBuiltinTransports")] == ["false"]
    # nothing in the profile may widen discovery beyond ROS_AUTOMATIC_DISCOVERY_RANGE
    for name in ("initialPeersList", "metatrafficMulticastLocatorList", "discoveryProtocol", "interfaceWhiteList"):
        assert not _find_all(root, name), name


SHIPPED = Path("/opt/ros/share/mgcda_ros/config") / PROFILE_NAME


@pytest.mark.parametrize("env, apply, fragment", [
    ({}, True, "Fast DDS profile for large images"),
    ({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, True, "Fast DDS profile for large images"),
    ({PROFILE_ENV: "/home/me/my_profile.xml"}, False, "already set (kept): /home/me/my_profile.xml"),
    ({PROFILE_ENV: str(SHIPPED)}, False, "already set (the shipped profile)"),
    ({PROFILE_ENV: "/home/me/my_profile.xml", OPT_OUT_ENV: "0"}, False, "already set (kept)"),
    ({OPT_OUT_ENV: "0"}, False, "Fast DDS defaults"),
    ({OPT_OUT_ENV: "Off"}, False, "Fast DDS defaults"),
    ({OPT_OUT_ENV: "1"}, True, "Fast DDS profile for large images"),
    ({PROFILE_ENV: ""}, True, "Fast DDS profile for large images"),  # empty = unset for Fast DDS too
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, False, "is not Fast DDS"),
])
def test_the_profile_is_applied_only_when_unset_and_not_opted_out(env, apply, fragment):
    decision = decide_profile(env, SHIPPED)
    assert decision.apply is apply
    assert fragment in decision.reason
    if apply:
        assert decision.profile == SHIPPED and decision.shipped_active
    elif PROFILE_ENV in env and env[PROFILE_ENV]:
        assert decision.profile == Path(env[PROFILE_ENV])
    else:
        assert decision.profile is None and not decision.shipped_active


def test_without_an_installed_profile_nothing_is_set():
    decision = decide_profile({}, None)
    assert not decision.apply and decision.profile is None and "not installed" in decision.reason


def test_apply_sets_the_variable_in_the_given_environment_only_when_decided(repo_root: Path):
    env: dict[str, str] = {}
    assert apply_default_profile(env).apply
    assert Path(env[PROFILE_ENV]).is_file() and Path(env[PROFILE_ENV]).name == PROFILE_NAME
    user = {PROFILE_ENV: "/elsewhere/profile.xml"}
    apply_default_profile(user)
    assert user == {PROFILE_ENV: "/elsewhere/profile.xml"}
    opted_out = {OPT_OUT_ENV: "false"}
    apply_default_profile(opted_out)
    assert opted_out == {OPT_OUT_ENV: "false"}
    assert profile_environment({OPT_OUT_ENV: "0"}) == {}
    assert profile_environment({}) == {PROFILE_ENV: env[PROFILE_ENV]}


def test_installed_profile_is_found_in_a_colcon_install_through_the_ament_index(tmp_path: Path, monkeypatch):
    prefix = tmp_path / "install" / "mgcda_ros"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "mgcda_ros").write_text("")
    (prefix / "share" / "mgcda_ros" / "config").mkdir(parents=True)
    profile = prefix / "share" / "mgcda_ros" / "config" / PROFILE_NAME
    profile.write_text("<dds/>")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert installed_profile() == profile


def test_installed_profile_falls_back_to_the_source_checkout(repo_root: Path, monkeypatch):
    monkeypatch.setenv("AMENT_PREFIX_PATH", "/nonexistent")
    found = installed_profile()
    assert found is not None and found.name == PROFILE_NAME and found.is_file()


def test_setup_installs_the_profile_beside_the_params_file(repo_root: Path):
    assert '(f"share/{PACKAGE}/config", glob("config/*.xml"))' in (repo_root / "setup.py").read_text()


def test_launch_file_gives_the_node_the_same_profile_environment(repo_root: Path):
    tree = ast.parse((repo_root / "launch" / "anomaly.launch.py").read_text())
    imports = {alias.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "mgcda_ros.transport"
               for alias in n.names}
    assert "profile_environment" in imports
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    # the node's arguments are one dict shared by the plain and the managed node
    shared = next(n for n in calls if getattr(n.func, "id", None) == "dict"
                  and any(kw.arg == "additional_env" for kw in n.keywords))
    env = next(kw.value for kw in shared.keywords if kw.arg == "additional_env")
    assert isinstance(env, ast.Call) and getattr(env.func, "id", None) == "profile_environment"
    for name in ("Node", "LifecycleNode"):
        node = next(n for n in calls if getattr(n.func, "id", None) == name)
        assert any(kw.arg is None and getattr(kw.value, "id", None) == "common" for kw in node.keywords), name


# -- real processes -------------------------------------------------------------------------------------------------

class WireWatch:
    """Counts RTPS packets of one DDS domain seen on the host's non-loopback interfaces (a raw packet socket, as
    tcpdump uses; needs CAP_NET_RAW). ``available`` is False where this process may not capture."""

    def __init__(self, domain_id: int) -> None:
        # RTPS well-known ports of a domain: 7400 + 250·domain + offsets below 250 (RTPS 2.5, §9.6.1.1)
        self.ports = range(7400 + 250 * domain_id, 7400 + 250 * (domain_id + 1))
        self.packets: list[tuple[str, int]] = []
        self._stop = threading.Event()
        try:
            self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        except (PermissionError, AttributeError, OSError):
            self.available = False
            return
        self.available = True
        self._socket.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            interface = address[0]
            if interface == "lo" or len(frame) < 42 or frame[12:14] != b"\x08\x00":
                continue
            header_len = (frame[14] & 0x0F) * 4
            if frame[23] != 17:  # not UDP
                continue
            udp = 14 + header_len
            (port,) = struct.unpack("!H", frame[udp + 2:udp + 4])
            if port in self.ports and frame[udp + 8:udp + 12] == b"RTPS":
                self.packets.append((interface, port))

    def stop(self) -> list[tuple[str, int]]:
        if self.available:
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._socket.close()
        return self.packets


def _shm_segments_mib(pid: int) -> dict[str, float]:
    """Fast DDS shared-memory segments mapped by a process (/dev/shm/fastdds_*), name -> size in MiB."""
    sizes: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5].startswith("/dev/shm/fastdds_") and "port" not in parts[5]:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            sizes[parts[5]] = max(sizes.get(parts[5], 0.0), (end - start) / 2**20)
    return sizes


@pytest.mark.ros
@pytest.mark.slow
def test_node_with_defaults_uses_the_profile_and_delivers_a_720p_frames_three_outputs(tmp_path: Path, monkeypatch):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from mgcda_ros.ros_process import CameraProcess, NodeProcess, Peer, diagnostics_values, wait_until

    monkeypatch.delenv(PROFILE_ENV, raising=False)  # the node's defaults: nothing inherited from this shell
    monkeypatch.delenv(OPT_OUT_ENV, raising=False)
    shipped = installed_profile()
    assert shipped is not None
    domain = (int(os.environ["ROS_DOMAIN_ID"]) + 120) % 200
    watch = WireWatch(domain)
    params = {"input_width": 128, "input_height": 64, "score": "msp", "qos_reliability": "reliable",
              "max_age_ms": 0.0, "backend": "torch"}
    node = NodeProcess(params, domain, tmp_path / "node")
    camera = CameraProcess(domain, env={PROFILE_ENV: str(shipped)})  # the camera leg: the writer's profile
    peer = Peer("planner", domain)  # stock Fast DDS settings: a subscriber needs no profile
    try:
        names = ("anomaly_mask", "anomaly_score", "anomaly_overlay")
        inboxes = {name: peer.subscribe(Image, f"/{name}", depth=10) for name in names}
        diagnostics = peer.subscribe(DiagnosticArray, "/diagnostics")
        camera.wait_ready(START_TIMEOUT)
        wait_until(lambda: all(peer.node.count_publishers(f"/{n}") for n in names) or not node.alive(),
                   START_TIMEOUT, "the node's outputs")
        assert node.alive(), node.output()

        def answers(frame_id: str) -> dict[str, Image] | None:
            found = {n: next((m for m in box.messages() if m.header.frame_id == frame_id), None)
                     for n, box in inboxes.items()}
            return found if all(found.values()) else None

        # the node's writers may match this subscriber a little after it discovered them: resend until complete
        outputs, attempt = None, 0
        while outputs is None:
            attempt += 1
            frame_id = f"frame{attempt}"
            camera.send(frame_id)
            try:
                outputs = wait_until(lambda: answers(frame_id), 10.0 if attempt < 6 else ANSWER_TIMEOUT,
                                     f"three outputs of {frame_id}")
            except TimeoutError:
                if attempt >= 6:
                    raise
        for name, encoding, bytes_per_pixel in (("anomaly_mask", "mono8", 1), ("anomaly_score", "32FC1", 4),
                                                ("anomaly_overlay", "bgr8", 3)):
            msg = outputs[name]
            assert (msg.height, msg.width, msg.encoding) == (720, 1280, encoding), name
            assert msg.step == 1280 * bytes_per_pixel and len(msg.data) == msg.step * 720, name
        assert len({(m.header.stamp.sec, m.header.stamp.nanosec) for m in outputs.values()}) == 1

        # the profile is active in the node: it says so, and its participant maps a 64 MiB segment
        log = node.output()
        assert f"transport: Fast DDS profile for large images: {shipped}" in log, log  # logged once started
        segments = _shm_segments_mib(node.process.pid)
        assert any(size >= 64 for size in segments.values()), segments
        def overlay_timed() -> dict[str, str] | None:
            # diagnostics go out once a second: the newest may predate the frame whose overlay was delivered (the
            # frames before it may have had no overlay subscriber matched yet, and then no overlay step)
            values = diagnostics_values(diagnostics.messages())
            return values if values is not None and values["step_publish_overlay_p50_ms"] != "nan" else None
        values = wait_until(overlay_timed, ANSWER_TIMEOUT, "diagnostics timing a published overlay")
        assert values["fastdds_profile"] == str(shipped)
        assert int(values["processed"]) >= 1 and float(values["step_publish_overlay_p50_ms"]) > 0
    finally:
        peer.close()
        camera.stop()
        node.stop()
        packets = watch.stop()
    # with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and the profile, nothing of this domain left loopback
    assert packets == [], packets
    if not watch.available:
        print("wire check skipped: no permission to capture packets (needs CAP_NET_RAW)")
