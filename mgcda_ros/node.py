"""``anomaly_node``: pixel-wise road anomaly masks, scores and overlays from a camera topic (docs/ROS.md).

Threading: the subscription callback only validates the message layout (O(1)) and keeps the newest frame in a
one-slot mailbox; a worker thread decodes, runs the detector and publishes. On a CPU the runtime may take two
frames at once (``frames_in_flight``, ``mgcda_core.runtime.lanes``): then two workers take turns at the mailbox and
publish in the order they took their frames (``mgcda_ros.in_order``). A frame replaced in the slot before a worker
took it, or older than ``max_age_ms`` when taken, is dropped and counted, so the node never builds a backlog.
Counters, latency percentiles and a health verdict go to /diagnostics at 1 Hz from the start, so "loading the
model" is visible too: the model loads while the node already spins.

:class:`AnomalyDetection` is that machinery; :class:`AnomalyNode` runs it at once, and the managed variant
(``mgcda_ros.lifecycle_node``) runs it through the lifecycle transitions.
"""

from __future__ import annotations

import array
import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import CallbackGroup
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool

from mgcda_core.errors import shorten
from mgcda_core.pipeline.detector import Detector
from mgcda_core.runtime.lanes import last_wait_s
from mgcda_core.utils.finite import require_finite_score
from mgcda_ros import ros_parameters
from mgcda_ros.conversions import RejectedImage, check_compressed, check_image, message_to_rgb
from mgcda_ros.health import Evidence, assess
from mgcda_ros.in_order import InOrder
from mgcda_ros.input_qos import InputSubscription, output_event_callbacks
from mgcda_ros.logs import forward_core_logs, stop_forwarding
from mgcda_ros.model_loading import ModelLoadError, load_detector
from mgcda_ros.overlay import make_overlay
from mgcda_ros.params import NodeParams, ParameterError
from mgcda_ros.postprocess import run_network, score_into, threshold_into
from mgcda_ros.publish_timing import FrameTimer, StepTimes, log_line
from mgcda_ros.spinning import Spinner
from mgcda_ros.stats import RateMeter, RecentEvents, RollingPercentiles
from mgcda_ros.transport import PROFILE_ENV, apply_default_profile

NODE_NAME = "anomaly_node"
DIAGNOSTICS_PERIOD_S = 1.0
T = TypeVar("T")
COUNTERS = ("received", "processed", "dropped_replaced", "dropped_old", "rejected", "errors", "skipped_disabled")


class ImageOutput:
    """One output topic and the sensor_msgs/Image it reuses every frame: the worker writes the payload in place.

    Building a fresh message per frame copied each payload twice more in Python (numpy -> array.array -> the
    ``data`` setter's own copy) before rclpy's conversion. Reuse is safe: ``publish`` converts the message to its C
    form before returning, and only one worker at a time touches it (the one whose turn it is: ``InOrder``).
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


class Inferred(NamedTuple):
    """A frame after the network, on its way to be published."""

    timer: FrameTimer
    rgb: np.ndarray
    network_score: np.ndarray
    cpu_start: float  # the worker thread's CPU time when it started on the frame (s)
    cpu_model: float  # of which the network took (s)


def message_stamp_ns(msg: Any) -> int:
    """A message's header stamp in nanoseconds (0: not set)."""
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def stamp_text(msg: Any) -> str:
    """A message's header stamp as seconds with nanoseconds, for log lines."""
    return f"{int(msg.header.stamp.sec)}.{int(msg.header.stamp.nanosec):09d}"


def frame_text(msg: Any) -> str:
    """A message's frame_id for log lines, quoted and shortened (it is the sender's text)."""
    return f"frame_id {shorten(str(msg.header.frame_id))}"


def declare_parameters(node: Node) -> NodeParams:
    """Declare the node's parameters, report names the parameters file sets but the node does not know, and
    return the validated values (ParameterError naming a bad one)."""
    values = ros_parameters.declare(node)
    unknown = ros_parameters.unknown_overrides(node)
    if unknown:
        node.get_logger().warning(f"ignoring unknown parameter(s) {', '.join(unknown)} set for this node (a typo? "
                                  f"known: {', '.join(sorted(values))})")
    return NodeParams.from_mapping(values)


class AnomalyDetection:
    """Input subscription -> detector -> outputs on ``node``, with diagnostics, the ``~/enable`` service and
    run-time parameters. States: unconfigured -> (configure: load the model, create the outputs) inactive ->
    (activate: subscribe, start the worker) running; deactivate and cleanup go back."""

    def __init__(self, node: Node, params: NodeParams, diagnostics_group: CallbackGroup | None = None) -> None:
        self.node = node
        self.params = params
        self.detector: Detector | None = None
        self.state = "unconfigured"
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._latency_ms = RollingPercentiles()
        self._model_ms = RollingPercentiles()
        self._overhead_ms = RollingPercentiles()
        self._overhead_cpu_ms = RollingPercentiles()
        self._age_ms = RollingPercentiles()
        self._steps = StepTimes()  # per-step times (mgcda_ros.publish_timing)
        self._score_scratch = np.empty((0, 0), np.float32)  # the score when nobody subscribes to it
        self._input_rate = RateMeter()
        self._processed_rate = RateMeter()
        self._errors = RecentEvents(params.diagnostics_window_s)
        self._stale = RecentEvents(params.diagnostics_window_s)
        self._rejects = RecentEvents(params.diagnostics_window_s)
        self._clock_offset_ms = 0.0
        self._cond = threading.Condition()
        self._slot: tuple[Any, float] | None = None
        self._stopping = False
        self._workers: list[threading.Thread] = []
        self._turns = InOrder()
        self._input: InputSubscription | None = None
        self._check: Callable[[Any], None] = self._check_raw
        self._outputs: dict[str, ImageOutput] = {}
        self._last_frame = time.monotonic()
        self._silence_reported = False
        self._log_handler = forward_core_logs(node.get_logger())
        self._diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        node.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics, callback_group=diagnostics_group)
        node.create_service(SetBool, "~/enable", self._on_enable)
        ros_parameters.watch(node, self.apply)

    # -- states -----------------------------------------------------------------------------------------------
    def configure(self) -> None:
        """Load the model (ModelLoadError naming the file) and create the output publishers."""
        self.state = "loading"
        self._publish_diagnostics()  # now: loading may take less than the diagnostics period
        try:
            self.detector = load_detector(self.params)
        except BaseException:
            self.state = "unconfigured"
            raise
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE)
        for topic, encoding, dtype, channels in (("anomaly_mask", "mono8", "u1", 1), ("anomaly_score", "32FC1", "<f4", 1),
                                                 ("anomaly_overlay", "bgr8", "u1", 3)):
            publisher = self.node.create_publisher(Image, topic, qos,
                                                   event_callbacks=output_event_callbacks(self.node, topic))
            self._outputs[topic] = ImageOutput(publisher, encoding, dtype, channels)
        self.state = "inactive"

    def activate(self) -> None:
        p = self.params
        with self._cond:
            self._stopping, self._slot = False, None
            self._turns = InOrder()
        # as many workers as the runtime takes frames at once (mgcda_core.runtime.lanes on a CPU; else one)
        workers = getattr(self.detector.runtime, "max_in_flight", 1) if self.detector is not None else 1
        self._workers = [threading.Thread(target=self._work, name=f"anomaly_worker_{i}", daemon=True)
                         for i in range(workers)]
        for worker in self._workers:
            worker.start()
        msg_type, topic, self._check = ((CompressedImage, "image/compressed", self._check_compressed)
                                        if p.input_transport == "compressed" else (Image, "image", self._check_raw))
        self._input = InputSubscription(self.node, msg_type, topic, self._on_image, p.qos_reliability, p.qos_depth)
        self._last_frame, self._silence_reported = time.monotonic(), False
        self.state = "running"
        self.node.get_logger().info(
            f"running: backend {self.detector_backend()}, {len(self._workers)} frame(s) in flight, score {p.score}, "
            f"input {p.input_width}x{p.input_height}, "
            f"{self._input.topic_name} ({p.input_transport}, qos_reliability {p.qos_reliability}), "
            f"model {p.model_path or 'default'}")

    def deactivate(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None
        if self._workers:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            for worker in self._workers:
                worker.join()
            self._workers = []
        self.state = "inactive"

    def cleanup(self) -> None:
        for output in self._outputs.values():
            self.node.destroy_publisher(output.publisher)
        self._outputs.clear()
        self.detector = None
        gc.collect()  # the graph's tensors go now, not at some later collection
        self._free_cuda_cache()
        self.state = "unconfigured"

    def close(self) -> None:
        """Stop everything (any state); the node itself stays for the caller to destroy."""
        if self.state == "running":
            self.deactivate()
        stop_forwarding(self._log_handler)

    @staticmethod
    def _free_cuda_cache() -> None:
        torch = sys.modules.get("torch")  # imported by the detector if it ran at all
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def apply(self, params: NodeParams) -> None:
        """Run-time parameters, validated: the worker reads ``self.params`` once per frame."""
        with self._cond:
            self.params = params
            if not params.enable:
                self._slot = None
        for window in (self._errors, self._stale, self._rejects):
            window.window_s = params.diagnostics_window_s

    def detector_backend(self) -> str:
        detector = self.detector
        return f"{detector.runtime.name} ({detector.runtime.device})" if detector is not None else "none"

    # -- subscription: O(1), keeps only the newest frame ----------------------------------------------------------
    def _check_raw(self, msg: Image) -> None:
        check_image(msg, self.params.max_input_pixels)

    def _check_compressed(self, msg: CompressedImage) -> None:
        check_compressed(msg, self.params.max_input_pixels)  # the size its header declares: nothing decoded

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now = time.monotonic()
        self._input_rate.tick(now)
        self._last_frame = now
        with self._cond:
            self._counters["received"] += 1
            if not self.params.enable:
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
        self._rejects.add(time.monotonic(), str(err))
        self.node.get_logger().warning(f"rejected input message ({count} so far): {err}",
                                       throttle_duration_sec=self.params.warn_throttle_s)

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        # the parameter is the one switch: the service sets it, so `ros2 param get enable` tells the truth
        result = self.node.set_parameters([Parameter("enable", Parameter.Type.BOOL, bool(request.data))])[0]
        response.success = result.successful
        response.message = ("enabled" if request.data else "disabled: incoming frames are ignored") \
            if result.successful else result.reason
        self.node.get_logger().info(f"detection {response.message}")
        return response

    # -- workers --------------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._slot is not None or self._stopping)
                if self._stopping:
                    return
                assert self._slot is not None
                msg, received = self._slot
                self._slot = None
                ticket = self._turns.ticket()  # here, under the lock: tickets follow the order frames are taken
            inferred = self._guarded(lambda: self._infer(msg, received))
            with self._turns.turn(ticket):  # even for a dropped or failed frame: the next ones wait for this turn
                if inferred is not None:
                    frame = inferred
                    frame.timer.lap("in_order")
                    self._guarded(lambda: self._publish(msg, frame))

    def _guarded(self, step: Callable[[], T]) -> T | None:
        """``step()``, or None after counting and reporting its error: one bad frame or a runtime hiccup must
        not stop the node."""
        try:
            return step()
        except RejectedImage as err:
            self._reject(err)
        except Exception as err:
            with self._cond:
                self._counters["errors"] += 1
                count = self._counters["errors"]
            self._errors.add(time.monotonic(), f"{type(err).__name__}: {err}")
            self.node.get_logger().error(f"processing failed ({count} so far): {type(err).__name__}: {err}",
                                         throttle_duration_sec=self.params.warn_throttle_s)
        return None

    def _drop_stale(self, p: NodeParams, stamp_ns: int) -> bool:
        """Count and report a frame older than ``max_age_ms``; a zero stamp means "not set" and is never stale."""
        if p.max_age_ms <= 0 or stamp_ns == 0:
            return False
        age_ms = (self.node.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if age_ms <= p.max_age_ms:
            return False
        with self._cond:
            self._counters["dropped_old"] += 1
            count = self._counters["dropped_old"]
        self._clock_offset_ms = age_ms
        self._stale.add(time.monotonic())
        self.node.get_logger().warning(
            f"dropping stale frames ({count} so far): the newest was stamped {age_ms / 1e3:.3f} s before this "
            f"node's clock (max_age_ms {p.max_age_ms:g}). Playing a bag: `ros2 bag play --clock` and start the "
            "node with use_sim_time:=true; a live camera: synchronise its clock with this host; or set "
            "max_age_ms:=0 to disable the check", throttle_duration_sec=p.warn_throttle_s)
        return True

    def _infer(self, msg: Image | CompressedImage, received: float) -> Inferred | None:
        """Decode and run the network (workers may be here at once); None for a stale frame."""
        p, detector = self.params, self.detector
        assert detector is not None
        if self._drop_stale(p, message_stamp_ns(msg)):
            return None
        cpu_start = time.thread_time()  # this thread's CPU time: the node's own work, whatever the machine load
        timer = FrameTimer(received)
        rgb = message_to_rgb(msg, p.max_input_pixels, p.input_bit_depth)
        timer.lap("decode")
        cpu_model_start = time.thread_time()
        network_score = run_network(detector, rgb)
        timer.lap("model")
        cpu_model = time.thread_time() - cpu_model_start
        waited_ms = 1e3 * last_wait_s(detector.runtime)
        if waited_ms > 0:  # waiting for the CPU is queueing, not the model's own time
            timer.steps["model"] -= waited_ms
            timer.steps["lane_wait"] = waited_ms
        # NaN thresholds to "no anomaly": such a frame is an error, and nothing is published for it
        require_finite_score(network_score, f"frame at stamp {stamp_text(msg)} ({frame_text(msg)})")
        return Inferred(timer, rgb, network_score, cpu_start, cpu_model)

    def _publish(self, msg: Image | CompressedImage, frame: Inferred) -> None:
        """Score, mask and overlay into the outgoing messages, and publish (one worker at a time: its turn)."""
        p, detector = self.params, self.detector  # one snapshot per frame: run-time changes apply to the next
        assert detector is not None
        timer, rgb, network_score = frame.timer, frame.rgb, frame.network_score
        height, width = rgb.shape[:2]
        mask_out, score_out, overlay_out = (self._outputs[t] for t in ("anomaly_mask", "anomaly_score",
                                                                        "anomaly_overlay"))
        # the score (4 bytes/pixel) and the overlay (a full-resolution blend) are sent only while someone listens;
        # the score is computed straight into its message then, else into a reused scratch buffer.
        send_score = p.publish_score and score_out.listened()
        if not send_score and self._score_scratch.shape != (height, width):
            self._score_scratch = np.empty((height, width), np.float32)
        score = score_into(detector, network_score,
                           score_out.pixels(height, width) if send_score else self._score_scratch)
        timer.lap("score_resize")
        mask = threshold_into(score, p.threshold, mask_out.pixels(height, width))
        timer.lap("threshold")
        mask_out.publish(msg.header)
        timer.lap("publish_mask")
        if send_score:
            score_out.publish(msg.header)
            timer.lap("publish_score")
        if p.publish_overlay and overlay_out.listened():
            make_overlay(rgb, mask, p.overlay_alpha, out=overlay_out.pixels(height, width))
            timer.lap("overlay")
            overlay_out.publish(msg.header)
            timer.lap("publish_overlay")
        self._record(msg, frame)

    def _record(self, msg: Image | CompressedImage, frame: Inferred) -> None:
        timer = frame.timer
        self._steps.add(timer)
        logger = self.node.get_logger()
        if logger.get_effective_level() <= rclpy.logging.LoggingSeverity.DEBUG:
            logger.debug(log_line(msg.header.frame_id, timer))
        done = time.monotonic()
        assert timer.received is not None
        model_s = timer.steps["model"] / 1e3
        self._processed_rate.tick(done)
        self._latency_ms.add((done - timer.received) * 1e3)
        self._model_ms.add(model_s * 1e3)
        self._overhead_ms.add((done - timer.received - model_s) * 1e3)
        self._overhead_cpu_ms.add((time.thread_time() - frame.cpu_start - frame.cpu_model) * 1e3)
        stamp = message_stamp_ns(msg)
        if stamp != 0:
            self._age_ms.add((self.node.get_clock().now().nanoseconds - stamp) / 1e6)
        with self._cond:
            self._counters["processed"] += 1

    # -- diagnostics ----------------------------------------------------------------------------------------------
    def evidence(self, now: float) -> Evidence:
        p, subscription = self.params, self._input  # deactivate may clear _input from another thread
        state = "disabled" if self.state == "running" and not p.enable else self.state
        return Evidence(state=state, topic=subscription.topic_name if subscription else "",
                        silent_s=now - self._last_frame, input_timeout_s=p.input_timeout_s,
                        window_s=p.diagnostics_window_s, errors=self._errors.count(now),
                        last_error=self._errors.last_note, stale=self._stale.count(now),
                        clock_offset_ms=self._clock_offset_ms, rejected=self._rejects.count(now),
                        last_rejection=self._rejects.last_note, input_rate_hz=self._input_rate.rate(now),
                        processed_rate_hz=self._processed_rate.rate(now))

    def diagnostics_values(self, evidence: Evidence) -> dict[str, str]:
        with self._cond:
            counters = dict(self._counters)
        values = {"state": evidence.state, "backend": self.detector_backend(),
                  "enabled": str(self.params.enable).lower(), "input_topic": evidence.topic,
                  "input_reliability": "", "input_publishers": "",
                  "seconds_since_frame": f"{evidence.silent_s:.1f}",
                  "input_rate_hz": f"{evidence.input_rate_hz:.2f}",
                  "processed_rate_hz": f"{evidence.processed_rate_hz:.2f}"}
        subscription = self._input
        if subscription is not None:
            values["input_reliability"] = subscription.reliability.name.lower()
            values["input_publishers"] = str(len(subscription.publisher_reliabilities()))
        for name, window in (("latency", self._latency_ms), ("model", self._model_ms),
                             ("overhead", self._overhead_ms), ("overhead_cpu", self._overhead_cpu_ms),
                             ("pipeline_age", self._age_ms)):
            p50, p95 = window.percentiles(50, 95)
            values[f"{name}_p50_ms"], values[f"{name}_p95_ms"] = f"{p50:.3f}", f"{p95:.3f}"
        values.update({name: str(count) for name, count in counters.items()})
        values["dropped"] = str(counters["dropped_replaced"] + counters["dropped_old"])
        values.update({"recent_errors": str(evidence.errors), "recent_stale": str(evidence.stale),
                       "recent_rejected": str(evidence.rejected), "last_error": evidence.last_error,
                       "last_rejection": evidence.last_rejection,
                       "stale_clock_offset_ms": f"{evidence.clock_offset_ms:.1f}"})
        values.update(self._steps.diagnostics_values())
        values["fastdds_profile"] = os.environ.get(PROFILE_ENV, "")  # "" = Fast DDS defaults
        return values

    def _report_silence(self, evidence: Evidence) -> None:
        """One log line when a silence starts (none while it lasts), again after frames came back and stopped."""
        silent = evidence.state == "running" and evidence.silent_s >= evidence.input_timeout_s
        subscription = self._input
        if silent and not self._silence_reported and subscription is not None:
            offered = subscription.publisher_reliabilities()
            self.node.get_logger().warning(
                f"no frame on {evidence.topic} for {evidence.silent_s:.0f} s; {len(offered)} publisher(s) "
                f"discovered on it" + ("" if offered else ": is the camera running, and is camera_topic (the "
                                       "remapping of `image`) its topic?"))
        self._silence_reported = silent

    def _publish_diagnostics(self) -> None:
        evidence = self.evidence(time.monotonic())
        self._report_silence(evidence)
        level, message = assess(evidence)
        values = self.diagnostics_values(evidence)
        status = DiagnosticStatus(level=bytes([level]), name=f"{self.node.get_fully_qualified_name()}: anomaly "
                                  "detection", message=message, hardware_id=values["backend"])
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array_msg = DiagnosticArray()
        array_msg.header.stamp = self.node.get_clock().now().to_msg()
        array_msg.status = [status]
        self._diag_pub.publish(array_msg)


class AnomalyNode(Node):
    """Subscribes ``image`` (or ``image/compressed``), publishes ``anomaly_mask``, ``anomaly_score``,
    ``anomaly_overlay``; :func:`main` loads the model while the node already spins (diagnostics say so)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.detection = AnomalyDetection(self, declare_parameters(self))


STOP_TIMEOUT_S = 10.0  # for the callback in progress at shutdown (e.g. a configure that loads the model)


def shut_down(node: Any, executor: Executor, spinner: Spinner) -> None:
    """End a node process, whatever state start-up reached: stop spinning, then the detection, the executor, the
    node, rclpy. ``node`` is None when it was never built (or any node with ``detection`` and ``destroy_node``)."""
    if not spinner.stop(STOP_TIMEOUT_S):
        rclpy.logging.get_logger(NODE_NAME).warning(
            f"a callback still runs {STOP_TIMEOUT_S:.0f} s after shutdown began; exiting without waiting for it")
    if node is not None:
        node.detection.close()
    executor.shutdown(timeout_sec=1.0)
    if node is not None:
        node.destroy_node()
    rclpy.try_shutdown()


NodeT = TypeVar("NodeT", bound=Node)


def serve(executor: Executor, build: Callable[[], NodeT], run: Callable[[NodeT, Spinner], None],
          fatal: tuple[type[Exception], ...]) -> int:
    """Build a node, add it to ``executor`` and ``run`` it (given the executor's not yet started spinner) until
    shutdown; the exit status of either console script: 0 on shutdown (Ctrl-C, SIGTERM, context shutdown), 2 with
    one fatal line for a ``fatal`` error."""
    node = None
    spinner = Spinner(executor)
    try:
        node = build()
        executor.add_node(node)
        run(node, spinner)
    except fatal as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {err}")
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        shut_down(node, executor, spinner)
    return 0


def init_with_python_signals(args: list[str] | None) -> None:
    """rclpy.init without rclpy's signal handling: Ctrl-C and SIGTERM (launch's shutdown) raise KeyboardInterrupt
    in the main thread, which then shuts everything down in order (``serve``). rclpy's own handler shuts the context
    down from its signal thread, which can race the executor's teardown (a segfault seen in about 1 of 8 stops of the
    managed node) and would only invalidate the context under code that loads a model."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Both, explicitly: Python leaves SIGINT ignored when the parent ignored it (anything started with & from a
    # script), and then neither Ctrl-C nor launch's SIGINT would stop the node.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def main(args: list[str] | None = None) -> int:
    """Console script ``anomaly_node``: exit status 0 on shutdown, 2 on invalid parameters or an unusable model."""
    profile = apply_default_profile()  # before rclpy.init: Fast DDS reads the profile with the first participant
    init_with_python_signals(args)
    executor = SingleThreadedExecutor()

    def run(node: AnomalyNode, spinner: Spinner) -> None:
        spinner.start()  # diagnostics report "loading" while the model loads
        node.detection.configure()
        node.detection.activate()
        node.get_logger().info(f"transport: {profile.reason}")  # after start-up: a failed start stays one line
        spinner.wait()

    return serve(executor, AnomalyNode, run, (ParameterError, ModelLoadError))


if __name__ == "__main__":
    sys.exit(main())
