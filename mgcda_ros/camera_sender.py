"""``python -m mgcda_ros.camera_sender``: a camera driver's stand-in in its own process (benchmark and tests).

Its own process because Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` once per process: the camera leg's
transport is decided by the camera's participant, so the caller chooses it through this process's environment.
Publishes a real road frame (``assets/road_anomaly``, resized) as sensor_msgs/Image, reliable, keep last 1 (as
image_transport publishes by default). Line protocol: it prints ``ready`` once its publisher has matched a
subscription; then each stdin line ``<frame_id>`` publishes one frame with that frame_id and the current stamp and
prints ``sent <frame_id> <monotonic s before publish>``; ``quit`` or end of input exits. The monotonic clock is
system-wide on Linux, so the caller compares it with its own receive times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

FRAME = Path(__file__).resolve().parent / "assets" / "road_anomaly" / "frames" / "animals22_red_fox_on_road.jpg"
MATCH_TIMEOUT_S = 600.0  # a node loading its model on a busy 2-core machine took 75 s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgcda_ros.camera_sender", description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic", default="/image")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args(argv)
    if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != "LOCALHOST":
        parser.error("set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (DDS traffic stays on loopback)")

    import cv2
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    frame = cv2.imread(str(FRAME), cv2.IMREAD_COLOR)
    if frame is None:
        parser.error(f"cannot read {FRAME}")
    bgr = cv2.resize(frame, (args.width, args.height), interpolation=cv2.INTER_LINEAR)
    rclpy.init(domain_id=int(os.environ["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("camera_sender")
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(Image, args.topic, qos)
    msg = Image(height=args.height, width=args.width, encoding="bgr8", is_bigendian=0, step=args.width * 3)
    msg.data = bgr.tobytes()
    try:
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while publisher.get_subscription_count() == 0:
            if time.monotonic() > deadline:
                print(f"error: no subscriber on {args.topic} after {MATCH_TIMEOUT_S:.0f} s", flush=True)
                return 1
            time.sleep(0.02)
        print("ready", flush=True)
        for line in sys.stdin:
            frame_id = line.strip()
            if frame_id == "quit":
                break
            if not frame_id:
                continue
            msg.header.frame_id = frame_id
            msg.header.stamp = node.get_clock().now().to_msg()
            sent = time.monotonic()
            publisher.publish(msg)
            print(f"sent {frame_id} {sent:.6f}", flush=True)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
