"""``python -m mgcda_ros.benchmark``: anomaly_node overhead at 1280x720 (bar: median < 10 ms on CPU, README's Benchmarks).

The node runs in its own process (input QoS reliable, see NODE_PARAMS); this process publishes 1280x720 bgr8 frames
(a real road frame) and subscribes to the mask, score and overlay, one frame at a time (no frame is dropped).
Input 1280x720 bgr8; one row with only the mask subscribed, one with mask, score and overlay, and that row again
with Fast DDS's asynchronous publication (``RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS`` in the node's
environment) for comparison: ``publish`` returns sooner, but the outputs reach subscribers later (docs/ROS.md).
Overhead = receive -> publish minus model time, per frame, measured inside the node (its /diagnostics
``overhead_p50_ms``/``overhead_p95_ms``): decoding, validation, mask/score/overlay building and publishing. The
round trip seen from this process (publish -> all three outputs received, DDS transport both ways included)
minus the node's median model time is reported beside it, and so is the worker thread's CPU time for the same
work (``overhead_cpu``): on a machine shared with other jobs, wall time includes waiting for a core. The model is the embedded default with a small
network input and the MSP score: model time is subtracted, so its size does not matter here.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 1280, 720
# Reliable input: with best effort, 2.7 MB frames are lost in UDP fragmentation on hosts with default socket
# buffers (measured here: 0 of 10 frames arrived), which would measure the network instead of the node.
NODE_PARAMS = {"input_width": 128, "input_height": 64, "score": "msp", "max_age_ms": 0.0, "backend": "torch",
               "qos_reliability": "reliable"}
TIMEOUT_S = 120.0


ALL_OUTPUTS = ("anomaly_mask", "anomaly_score", "anomaly_overlay")
#: (subscribed outputs, Fast DDS publication mode); None = the environment's (Fast DDS default: synchronous).
ROWS = ((("anomaly_mask",), None), (ALL_OUTPUTS, None), (ALL_OUTPUTS, "ASYNCHRONOUS"))
PUBLICATION_MODE_ENV = "RMW_FASTRTPS_PUBLICATION_MODE"


def run(quick: bool = False) -> list[dict]:
    """One row per set of subscribed outputs (the node skips the score and overlay nobody listens to)."""
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
            wait_until(lambda: pub.get_subscription_count() > 0 or not node.alive(), TIMEOUT_S, "the node")
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


def _arrivals(outputs: list, frame_id: str) -> list[float] | None:
    times = [next((t for t, m in inbox.items if m.header.frame_id == frame_id), None) for inbox in outputs]
    return None if any(t is None for t in times) else times


def _settled(values: dict[str, str] | None, processed: int) -> dict[str, str] | None:
    return values if values is not None and int(values["processed"]) >= processed else None


def main(argv: list[str] | None = None) -> int:
    from mgcda_core.benchmark.__main__ import format_table

    parser = argparse.ArgumentParser(prog="python -m mgcda_ros.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 frames instead of 40")
    args = parser.parse_args(argv)
    print(format_table(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
