"""``anomaly_node``: pixel-wise road anomaly masks, scores and overlays from a camera topic (docs/ROS.md).

Threading: the subscription callback only validates the message layout (O(1)) and keeps the newest frame in a
one-slot mailbox; a worker thread decodes, runs the detector and publishes. A frame replaced in the slot before
the worker took it, or older than ``max_age_ms`` when taken, is dropped and counted, so the node never builds a
backlog. Counters and latency percentiles go to /diagnostics at 1 Hz.
"""

from __future__ import annotations

import array
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool

from mgcda_ros.conversions import RejectedImage, check_compressed, check_image, mask_to_mono8, message_to_rgb
from mgcda_ros.model_loading import ModelLoadError, load_detector
from mgcda_ros.overlay import anomaly_mask, make_overlay
from mgcda_ros.params import NodeParams, ParameterError
from mgcda_ros.stats import RateMeter, RollingPercentiles

NODE_NAME = "anomaly_node"
DIAGNOSTICS_PERIOD_S = 1.0


class ImageOutput:
    """One output topic and the sensor_msgs/Image it reuses every frame: the worker writes the payload in place.

    Building a fresh message per frame copied each payload twice more in Python (numpy -> array.array -> the
    ``data`` setter's own copy) before rclpy's conversion. Reuse is safe: ``publish`` converts the message to its C
    form before returning, and only the worker thread touches it.
    """

    def __init__(self, publisher: Any, encoding: str, dtype: str, channels: int) -> None:
        self.publisher = publisher
        self.message = Image(encoding=encoding, is_bigendian=0)
        self._dtype, self._channels = np.dtype(dtype), channels
        self._pixels = np.empty((0, 0, channels) if channels > 1 else (0, 0), self._dtype)

    def listened(self) -> bool:
        return self.publisher.get_subscription_count() > 0

    def pixels(self, height: int, width: int) -> np.ndarray:
        """The payload as an HxW(xC) array to write into; reallocated only when the size changes."""
        if self._pixels.shape[:2] != (height, width):
            msg = self.message
            msg.height, msg.width, msg.step = height, width, width * self._channels * self._dtype.itemsize
            msg.data = array.array("B", bytes(msg.step * height))  # array.array: rclpy's native uint8[] type
            shape = (height, width, self._channels) if self._channels > 1 else (height, width)
            # read back: the setter stores its own copy, and that copy is what gets published
            self._pixels = np.frombuffer(msg.data, self._dtype).reshape(shape)
        return self._pixels

    def publish(self, header: Any) -> None:
        self.message.header = header
        self.publisher.publish(self.message)


class AnomalyNode(Node):
    """Subscribes ``image`` (or ``image/compressed``), publishes ``anomaly_mask``, ``anomaly_score``, ``anomaly_overlay``."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.params = self._read_params()
        self.detector = load_detector(self.params)
        self._counters = {"received": 0, "processed": 0, "dropped_replaced": 0, "dropped_old": 0, "rejected": 0,
                          "errors": 0, "skipped_disabled": 0}
        self._latency_ms = RollingPercentiles()
        self._model_ms = RollingPercentiles()
        self._overhead_ms = RollingPercentiles()
        self._overhead_cpu_ms = RollingPercentiles()
        self._age_ms = RollingPercentiles()
        self._input_rate = RateMeter()
        self._processed_rate = RateMeter()
        self._cond = threading.Condition()
        self._slot: tuple[Any, float] | None = None
        self._enabled = True
        self._stopping = False
        self._last_reject = ""

        p = self.params
        reliability = ReliabilityPolicy.RELIABLE if p.qos_reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        input_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.qos_depth, reliability=reliability)
        output_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        if p.input_transport == "compressed":
            self._check = check_compressed
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, input_qos)
        else:
            self._check = lambda msg: check_image(msg, p.max_input_pixels)
            self.create_subscription(Image, "image", self._on_image, input_qos)
        self._mask_out = ImageOutput(self.create_publisher(Image, "anomaly_mask", output_qos), "mono8", "u1", 1)
        self._score_out = (ImageOutput(self.create_publisher(Image, "anomaly_score", output_qos), "32FC1", "<f4", 1)
                           if p.publish_score else None)
        self._overlay_out = (ImageOutput(self.create_publisher(Image, "anomaly_overlay", output_qos), "bgr8", "u1", 3)
                             if p.publish_overlay else None)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="anomaly_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: backend {self.detector_backend()}, score {p.score}, input {p.input_width}x{p.input_height}, "
            f"transport {p.input_transport}, model {p.model_path or 'embedded default'}")

    # -- start-up ---------------------------------------------------------------------------------------------
    def _read_params(self) -> NodeParams:
        # dynamic typing so a wrong type reaches NodeParams, which refuses it with the parameter's name.
        descriptor = ParameterDescriptor(dynamic_typing=True)
        values = {}
        for name, default in NodeParams().as_dict().items():
            values[name] = self.declare_parameter(name, default, descriptor).value
        return NodeParams.from_mapping(values)

    def detector_backend(self) -> str:
        return f"{self.detector.runtime.name} ({self.detector.runtime.device})"

    # -- subscription: O(1), keeps only the newest frame ----------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self._input_rate.tick(now)
        with self._cond:
            self._counters["received"] += 1
            if not self._enabled:
                self._counters["skipped_disabled"] += 1
                return
        try:
            self._check(msg)
        except RejectedImage as err:
            self._reject(err)
            return
        with self._cond:
            if self._slot is not None:
                self._counters["dropped_replaced"] += 1
            self._slot = (msg, now)
            self._cond.notify()

    def _reject(self, err: Exception) -> None:
        with self._cond:
            self._counters["rejected"] += 1
            count = self._counters["rejected"]
            self._last_reject = str(err)
        self.get_logger().warning(f"rejected input message ({count} so far): {err}",
                                  throttle_duration_sec=self.params.warn_throttle_s)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._cond:
            self._enabled = bool(request.data)
            self._slot = None
        response.success = True
        response.message = "enabled" if request.data else "disabled: incoming frames are ignored"
        self.get_logger().info(f"detection {response.message}")
        return response

    # -- worker ---------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._stopping)
                if self._stopping:
                    return
                msg, received = self._slot
                self._slot = None
            try:
                self._process(msg, received)
            except RejectedImage as err:
                self._reject(err)
            except Exception as err:  # keep running: one bad frame or a runtime hiccup must not kill the node
                with self._cond:
                    self._counters["errors"] += 1
                self.get_logger().error(f"processing failed: {type(err).__name__}: {err}", throttle_duration_sec=5.0)

    def _process(self, msg: Image | CompressedImage, received: float) -> None:
        p = self.params
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        # a zero stamp means "not set": its age is meaningless, so such frames are never dropped as old.
        if p.max_age_ms > 0 and stamp != 0 and (self.get_clock().now().nanoseconds - stamp) > p.max_age_ms * 1e6:
            with self._cond:
                self._counters["dropped_old"] += 1
            return
        cpu_start = time.thread_time()  # this thread's CPU time: the node's own work, whatever the machine load
        rgb = message_to_rgb(msg, p.max_input_pixels)
        start, cpu_model_start = time.monotonic(), time.thread_time()
        score = self.detector(rgb)
        model_s, cpu_model = time.monotonic() - start, time.thread_time() - cpu_model_start
        if score.shape != rgb.shape[:2] or score.dtype != np.float32:
            raise RuntimeError(f"detector returned {score.dtype} {score.shape}, expected float32 {rgb.shape[:2]}")
        height, width = score.shape
        mask = anomaly_mask(score, p.threshold)
        mask_to_mono8(mask, out=self._mask_out.pixels(height, width))
        self._mask_out.publish(msg.header)
        # the score (4 bytes/pixel) and the overlay (a full-resolution blend) are large: only while someone listens.
        if self._score_out is not None and self._score_out.listened():
            np.copyto(self._score_out.pixels(height, width), score)
            self._score_out.publish(msg.header)
        if self._overlay_out is not None and self._overlay_out.listened():
            make_overlay(rgb, mask, p.overlay_alpha, out=self._overlay_out.pixels(height, width))
            self._overlay_out.publish(msg.header)
        done = time.monotonic()
        self._processed_rate.tick(done)
        self._latency_ms.add((done - received) * 1e3)
        self._model_ms.add(model_s * 1e3)
        self._overhead_ms.add((done - received - model_s) * 1e3)
        self._overhead_cpu_ms.add((time.thread_time() - cpu_start - cpu_model) * 1e3)
        if stamp != 0:
            self._age_ms.add((self.get_clock().now().nanoseconds - stamp) / 1e6)
        with self._cond:
            self._counters["processed"] += 1

    # -- diagnostics ----------------------------------------------------------------------------------------------
    def diagnostics_values(self) -> dict[str, str]:
        now = time.monotonic()
        with self._cond:
            counters = dict(self._counters)
            enabled, last_reject = self._enabled, self._last_reject
        values = {"backend": self.detector_backend(), "enabled": str(enabled).lower(),
                  "input_rate_hz": f"{self._input_rate.rate(now):.2f}",
                  "processed_rate_hz": f"{self._processed_rate.rate(now):.2f}"}
        for name, window in (("latency", self._latency_ms), ("model", self._model_ms),
                             ("overhead", self._overhead_ms), ("overhead_cpu", self._overhead_cpu_ms),
                             ("pipeline_age", self._age_ms)):
            p50, p95 = window.percentiles(50, 95)
            values[f"{name}_p50_ms"], values[f"{name}_p95_ms"] = f"{p50:.3f}", f"{p95:.3f}"
        values.update({name: str(count) for name, count in counters.items()})
        values["dropped"] = str(counters["dropped_replaced"] + counters["dropped_old"])
        values["last_rejection"] = last_reject
        return values

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus()
        status.name = f"{self.get_fully_qualified_name()}: anomaly detection"
        status.hardware_id = values["backend"]
        if values["enabled"] != "true":
            status.level, status.message = DiagnosticStatus.OK, "disabled by ~/enable"
        elif int(values["errors"]) > 0:
            status.level, status.message = DiagnosticStatus.WARN, "inference errors occurred (see log)"
        elif float(values["input_rate_hz"]) > 0 and float(values["processed_rate_hz"]) == 0:
            status.level, status.message = DiagnosticStatus.WARN, "receiving frames but publishing none"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._worker.join()


def main(args: list[str] | None = None) -> int:
    """Console script ``anomaly_node``: exit status 0 on shutdown, 2 on invalid parameters or an unusable model."""
    rclpy.init(args=args)
    node = None
    try:
        node = AnomalyNode()
        rclpy.spin(node)
    except (ParameterError, ModelLoadError) as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
