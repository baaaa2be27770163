"""``python -m mgcda_ros.benchmark``: the latency a planner sees at 1280x720, and the node's own overhead.

Planner table (the default run prints it last): a camera process (``mgcda_ros.camera_sender``) publishes 1280x720
bgr8 frames of a real road scene at 5 Hz, reliable (image_transport's default); ``anomaly_node`` runs in its own
process; this process subscribes to the mask, score and overlay like a planner, with stock Fast DDS settings (the
reader's transport settings do not decide the leg). Per frame: camera publish -> last of the three outputs received,
minus that frame's model time as the node reports it (its per-frame debug line, ``mgcda_ros.publish_timing``);
p50/p95/max and frames complete (all three outputs received; for the others, whether the node never processed them
— lost on the way in, or replaced in its one-frame mailbox by the next — or their outputs did not all arrive), split
into camera -> node (publish to the node's subscription taking the frame), the node without the model (with each
step's median) and node -> planner (the node's last publish to the last output received here). The planner
subscribes raw (serialized bytes, frame_id read in place): arrival in its process is measured, and what rclpy would
add to turn the three outputs into Python messages is timed afterwards as its own column (a C++ planner does not pay
it). Rows, in one run: the shipped Fast DDS profile on the camera and the node (the node applies it by default); on
the node only (a camera driver left at Fast DDS defaults); Fast DDS defaults on both (``MGCDA_FASTDDS_PROFILE=0``)
(docs/ROS.md, "Transport for large images"); then the camera at 10 Hz with the node's defaults (two frames in flight)
and with ``frames_in_flight: 1``, which show whether the node keeps up with a camera that one frame at a time may
not (frames complete; beyond the model then includes waiting for the CPU).
Each row says whether the machine's first two CPUs shared a cache right before and after its frames
(``cpus_share_cache``, ``mgcda_core.benchmark.host``): a VM's host may move its vCPUs from one chip onto two sockets,
which slows the model's two threads by up to 1.6x (its time is subtracted) and the node's own work by ~2 ms
(docs/ROS.md).

Overhead table: the node's receive -> publish time minus model time, measured inside the node (/diagnostics
``overhead_p50_ms``/``overhead_p95_ms``), one frame at a time from this process: only the mask subscribed; mask,
score and overlay; and that again with Fast DDS's asynchronous publication (``RMW_FASTRTPS_PUBLICATION_MODE=
ASYNCHRONOUS`` in the node's environment): ``publish`` returns sooner, but the outputs reach subscribers later
(docs/ROS.md). The worker thread's CPU time for the same work (``overhead_cpu``) is beside it: on a machine shared
with other jobs, wall time includes waiting for a core.

The node runs with its defaults (the shipped network, its default score and input size, backend ``auto``: ONNX
Runtime on a CPU); only ``max_age_ms`` (0: every frame counts) and the input reliability are set. Model time is
subtracted, but the runtime still matters: what it does with its threads after a run decides how fast the node's
post-processing and the other processes' transport go (docs/ROS.md). Every process runs with
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST in a domain of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mgcda_core.benchmark.host import cache_sharing, core_coupling

WIDTH, HEIGHT = 1280, 720
# Reliable input: with best effort, 2.7 MB frames are lost in UDP fragmentation on hosts with default socket
# buffers (measured here: 0 of 10 frames arrived), which would measure the network instead of the node.
NODE_PARAMS = {"max_age_ms": 0.0, "qos_reliability": "reliable"}
TIMEOUT_S = 120.0
START_TIMEOUT_S = 600.0  # a node loading its model on a busy 2-core machine took 75 s
RATE_HZ = 5.0  # the camera rate of the latency bar
FAST_RATE_HZ = 10.0  # a camera faster than one frame at a time keeps up with on some hosts
WARM_UP_FRAMES = 3
#: planner rows: (setup, whether the camera gets the shipped profile, the node's extra environment, camera rate,
#: node parameters beyond NODE_PARAMS)
PLANNER_ROWS: tuple[tuple[str, bool, dict[str, str], float, dict[str, Any]], ...] = (
    ("shipped profile on camera and node", True, {}, RATE_HZ, {}),  # the node applies the profile by default
    ("profile on the node only", False, {}, RATE_HZ, {}),
    ("Fast DDS defaults", False, {"MGCDA_FASTDDS_PROFILE": "0"}, RATE_HZ, {}),
    ("shipped profile, 10 Hz camera", True, {}, FAST_RATE_HZ, {}),
    ("shipped profile, 10 Hz camera, frames_in_flight 1", True, {}, FAST_RATE_HZ, {"frames_in_flight": 1}))


ALL_OUTPUTS = ("anomaly_mask", "anomaly_score", "anomaly_overlay")
#: (subscribed outputs, Fast DDS publication mode); None = the environment's (Fast DDS default: synchronous).
ROWS = ((("anomaly_mask",), None), (ALL_OUTPUTS, None), (ALL_OUTPUTS, "ASYNCHRONOUS"))
PUBLICATION_MODE_ENV = "RMW_FASTRTPS_PUBLICATION_MODE"


def run(quick: bool = False) -> list[dict]:
    """Overhead table: one row per set of subscribed outputs (the node skips the score and overlay nobody listens
    to)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # set before rclpy starts in this process
    from mgcda_core.utils.images import read_rgb
    from mgcda_ros.demo import ASSETS

    rgb = cv2.resize(read_rgb(ASSETS / "frames" / "animals22_red_fox_on_road.jpg"), (WIDTH, HEIGHT),
                     interpolation=cv2.INTER_LINEAR)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1]).tobytes()
    return [_measure(names, mode, 10 if quick else 40, bgr) for names, mode in ROWS]


def _measure(names: tuple[str, ...], mode: str | None, frames: int, bgr: bytes) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from mgcda_ros.ros_process import NodeProcess, Peer, diagnostics_values, wait_until

    domain = 100 + os.getpid() % 100
    with tempfile.TemporaryDirectory(prefix="mgcda_ros_bench_") as tmp:
        env = {} if mode is None else {PUBLICATION_MODE_ENV: mode}
        node = NodeProcess(NODE_PARAMS, domain, Path(tmp), env=env)
        peer = Peer("overhead_benchmark", domain)
        try:
            pub = peer.publisher(Image, "/image", depth=1)  # reliable, as image_transport publishes by default
            outputs = [peer.subscribe(Image, f"/{name}", depth=10) for name in names]
            diagnostics = peer.subscribe(DiagnosticArray, "/diagnostics")
            wait_until(lambda: pub.get_subscription_count() > 0 or not node.alive(), START_TIMEOUT_S, "the node")
            if not node.alive():
                raise RuntimeError(f"anomaly_node exited:\n{node.output()}")
            wait_until(lambda: all(peer.node.count_publishers(f"/{n}") for n in names), TIMEOUT_S, "node outputs")
            round_trips = []
            for index in range(frames + 3):  # 3 warm-up frames
                msg = Image()
                msg.header.stamp = peer.node.get_clock().now().to_msg()
                msg.header.frame_id = f"bench{index}"
                msg.height, msg.width, msg.encoding, msg.step = HEIGHT, WIDTH, "bgr8", WIDTH * 3
                msg.data = bgr
                sent = time.monotonic()
                pub.publish(msg)
                arrivals = wait_until(lambda: _arrivals(outputs, msg.header.frame_id), TIMEOUT_S,
                                      f"outputs of frame {index}")
                if index >= 3:
                    round_trips.append((max(arrivals) - sent) * 1e3)
            values = wait_until(lambda: _settled(diagnostics_values(diagnostics.messages()), frames + 3),
                                TIMEOUT_S, "diagnostics of all frames")
        finally:
            peer.close()
            node.stop()
    model_p50 = float(values["model_p50_ms"])
    return {
        "outputs": "+".join(n.removeprefix("anomaly_") for n in names), "frames": frames,
        "publication": (mode or os.environ.get(PUBLICATION_MODE_ENV, "SYNCHRONOUS")).lower(),
        "overhead_p50_ms": float(values["overhead_p50_ms"]), "overhead_p95_ms": float(values["overhead_p95_ms"]),
        "overhead_cpu_p50_ms": float(values["overhead_cpu_p50_ms"]),
        "model_p50_ms": model_p50,
        "round_trip_p50_ms": float(np.percentile(round_trips, 50)),
        "round_trip_minus_model_p50_ms": float(np.percentile(round_trips, 50)) - model_p50,
        "round_trip_minus_model_p95_ms": float(np.percentile(round_trips, 95)) - model_p50,
        "meets_10ms_bar": float(values["overhead_p50_ms"]) < 10.0,
        "load_avg_1min": os.getloadavg()[0],
    }


def run_planner(frames: int = 30) -> list[dict]:
    """Planner table: one row per setup (PLANNER_ROWS), ``frames`` measured frames each at the row's rate."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # set before rclpy starts in this process
    from mgcda_ros.transport import OPT_OUT_ENV, PROFILE_ENV, installed_profile

    shipped = installed_profile()
    if shipped is None:
        raise RuntimeError("config/fastdds_large_images.xml is not installed")
    rows = []
    for index, (setup, camera_profile, node_env, rate_hz, params) in enumerate(PLANNER_ROWS):
        camera_env = {PROFILE_ENV: str(shipped)} if camera_profile else {}
        drop = (PROFILE_ENV, OPT_OUT_ENV)  # each row decides both processes' transport itself
        rows.append(_measure_planner(setup, camera_env, node_env, drop, frames, 150 + (os.getpid() + index) % 50,
                                     rate_hz, params))
    return rows


def _measure_planner(setup: str, camera_env: dict, node_env: dict, drop: tuple[str, ...], frames: int,
                     domain: int, rate_hz: float = RATE_HZ, params: dict[str, Any] | None = None) -> dict:
    from sensor_msgs.msg import Image

    from mgcda_ros.publish_timing import STEPS, parse_log
    from mgcda_ros.ros_process import CameraProcess, NodeProcess, Peer, wait_until

    with tempfile.TemporaryDirectory(prefix="mgcda_ros_bench_") as tmp:
        node = NodeProcess(NODE_PARAMS | (params or {}), domain, Path(tmp), env=node_env,
                           drop_env=tuple(k for k in drop if k not in node_env),
                           ros_args=("--log-level", "anomaly_node:=debug"))  # per-frame model time in its log
        camera = CameraProcess(domain, env=camera_env, drop_env=tuple(k for k in drop if k not in camera_env))
        peer = Peer("planner", domain)
        try:
            # Raw: arrival in this process is what the legs measure; rclpy's conversion into Python objects is
            # timed separately below (a C++ planner does not pay it).
            outputs = [peer.subscribe(Image, f"/{name}", depth=100, raw=True) for name in ALL_OUTPUTS]
            camera.wait_ready(START_TIMEOUT_S)
            wait_until(lambda: all(peer.node.count_publishers(f"/{n}") for n in ALL_OUTPUTS) or not node.alive(),
                       START_TIMEOUT_S, "node outputs")
            if not node.alive():
                raise RuntimeError(f"anomaly_node exited:\n{node.output()}")
            _warm_up(camera, outputs)
            before = core_coupling()  # the host may move its vCPUs between one chip and two sockets: say which
            start = time.monotonic()
            ids = [f"bench{i}" for i in range(frames)]
            for i, frame_id in enumerate(ids):  # a fixed schedule, as a camera publishes
                time.sleep(max(0.0, start + i / rate_hz - time.monotonic()))
                camera.send(frame_id)
            try:  # then wait for stragglers: a frame still missing after this is counted incomplete
                wait_until(lambda: all(_arrivals(outputs, f) for f in ids), 10.0, "all outputs")
            except TimeoutError:
                pass
            wait_until(lambda: all(f in camera.sent for f in ids), TIMEOUT_S, "the camera's send times")
            complete = {f: max(a) for f in ids if (a := _arrivals(outputs, f)) is not None}
            wait_until(lambda: _model_times(parse_log(node.output()), complete), TIMEOUT_S,
                       "the node's per-frame model times")
            node_log = node.output()
            after = core_coupling()  # before the processes stop: the same minutes as the frames
        finally:
            peer.close()
            camera.stop()
            node.stop()
    logged = parse_log(node_log)
    legs = _legs(logged, camera.sent, complete)
    beyond = legs["beyond_model"]
    has = beyond.size > 0
    row: dict[str, Any] = {
        "setup": setup, "camera_hz": rate_hz, "camera_profile": "yes" if camera_env else "no",
        "node_profile": "yes" if "transport: Fast DDS profile for large images" in node_log else "no",
        "frames_complete": f"{len(complete)}/{frames}",
        "incomplete": _incomplete(ids, complete, logged),
        "beyond_model_p50_ms": float(np.percentile(beyond, 50)) if has else None,
        "beyond_model_p95_ms": float(np.percentile(beyond, 95)) if has else None,
        "beyond_model_max_ms": float(beyond.max()) if has else None,
    }
    for leg in ("camera_to_node", "node_without_model", "node_to_planner"):
        row[f"{leg}_p50_ms"] = float(np.percentile(legs[leg], 50)) if has else None
        row[f"{leg}_p95_ms"] = float(np.percentile(legs[leg], 95)) if has else None
    deserialize = [_rclpy_deserialize_ms(outputs, f) for f in complete]
    row["rclpy_deserialize_p50_ms"] = float(np.median(deserialize)) if has else None
    steps = [logged[f] for f in complete]
    row["node_steps_p50_ms"] = " ".join(  # where node_without_model goes; a step a frame skipped took 0 ms
        f"{s}={np.median([frame.get(s, 0.0) for frame in steps]):.1f}" for s in STEPS
        if s != "model" and any(s in frame for frame in steps))
    row.update({"model_p50_ms": float(np.median(legs["model"])) if has else None,
                # the bar is set at 5 Hz; at 10 Hz the rows show whether the node keeps up (frames complete)
                "meets_20ms_p95_bar": (bool(has and len(complete) == frames and np.percentile(beyond, 95) <= 20.0)
                                       if rate_hz == RATE_HZ else None),
                "cpus_share_cache": cache_sharing(before, after),
                "load_avg_1min": os.getloadavg()[0]})
    return row


def _incomplete(ids: list[str], complete: dict[str, float], logged: dict[str, dict[str, float]]) -> str:
    """Where the frames of ``ids`` that are not ``complete`` were lost: never in the node's per-frame log (its worker
    never took them: lost on the way in, or replaced in its mailbox by the next frame), or processed with not every
    output received; "" when none is missing."""
    missing = [f for f in ids if f not in complete]
    if not missing:
        return ""
    unprocessed = sum(f not in logged for f in missing)
    return f"{unprocessed} not processed by the node, {len(missing) - unprocessed} outputs not all received"


def _rclpy_deserialize_ms(outputs: list, frame_id: str) -> float:
    """What an rclpy planner would add to a frame: converting its three raw outputs into Python messages, in ms."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from mgcda_ros.ros_process import header_frame_id

    start = time.perf_counter()
    for inbox in outputs:
        deserialize_message(next(m for _, m in inbox.items if header_frame_id(m) == frame_id), Image)
    return (time.perf_counter() - start) * 1e3


def _legs(logged: dict[str, dict[str, float]], sent: dict[str, float], complete: dict[str, float]
          ) -> dict[str, np.ndarray]:
    """Per complete frame, in ms: camera publish -> the node's subscription taking it; the node's steps other than
    the model (queue, decode, score, mask, overlay, publishes); its last publish -> the last output received here;
    their sum (beyond_model) and the model time. Every time is on the system-wide monotonic clock."""
    columns: dict[str, list[float]] = {k: [] for k in ("camera_to_node", "node_without_model", "node_to_planner",
                                                         "beyond_model", "model")}
    for frame_id, arrived in complete.items():
        steps = dict(logged[frame_id])
        received_at = steps.pop("received_at")
        node_ms = sum(steps.values())
        columns["camera_to_node"].append((received_at - sent[frame_id]) * 1e3)
        columns["node_without_model"].append(node_ms - steps["model"])
        columns["node_to_planner"].append((arrived - received_at) * 1e3 - node_ms)
        columns["beyond_model"].append((arrived - sent[frame_id]) * 1e3 - steps["model"])
        columns["model"].append(steps["model"])
    return {k: np.array(v) for k, v in columns.items()}


def _warm_up(camera: Any, outputs: list) -> None:
    """Until WARM_UP_FRAMES frames in a row came back complete: the node's writers may match this process's readers
    a little after discovery, and its first frames pay for lazy allocations."""
    from mgcda_ros.ros_process import wait_until

    done, attempt = 0, 0
    while done < WARM_UP_FRAMES:
        attempt += 1
        if attempt > 20:
            raise RuntimeError("warm-up frames did not come back complete")
        frame_id = f"warm{attempt}"
        camera.send(frame_id)
        try:
            wait_until(lambda: _arrivals(outputs, frame_id), 15.0, f"outputs of {frame_id}")
            done += 1
        except TimeoutError:
            done = 0


def _model_times(logged: dict[str, dict[str, float]], frames: dict) -> dict[str, float] | None:
    times = {f: logged[f]["model"] for f in frames if f in logged and "model" in logged[f]}
    return times if len(times) == len(frames) else None


def _arrivals(outputs: list, frame_id: str) -> list[float] | None:
    from mgcda_ros.ros_process import header_frame_id

    times = [next((t for t, m in inbox.items if header_frame_id(m) == frame_id), None) for inbox in outputs]
    arrived = [t for t in times if t is not None]
    return arrived if len(arrived) == len(times) else None


def _settled(values: dict[str, str] | None, processed: int) -> dict[str, str] | None:
    return values if values is not None and int(values["processed"]) >= processed else None


def main(argv: list[str] | None = None) -> int:
    from mgcda_core.benchmark.__main__ import format_table

    parser = argparse.ArgumentParser(prog="python -m mgcda_ros.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="overhead: 10 frames instead of 40; planner: 10 instead of 30")
    parser.add_argument("--only", choices=("planner", "overhead"), help="run one table only")
    args = parser.parse_args(argv)
    if args.only != "planner":
        print("Node overhead (inside the node, one frame at a time):")
        print(format_table(run(quick=args.quick)), flush=True)
    if args.only != "overhead":
        print(f"\nWhat a planner sees: camera publish -> last output received, minus model time "
              f"({WIDTH}x{HEIGHT} bgr8 at {RATE_HZ:g} Hz, and {FAST_RATE_HZ:g} Hz in the last rows; measured under load "
              f"average {os.getloadavg()[0]:.1f}):")
        print(format_table(run_planner(10 if args.quick else 30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
