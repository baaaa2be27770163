"""Run ``anomaly_node`` in its own process and talk to it from another (tests and the overhead benchmark).

Every ROS process started here gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and an explicit
``ROS_DOMAIN_ID``: DDS traffic stays on loopback (without it Fast DDS also multicasts its discovery on external
interfaces). Waiting is always on a condition (discovery, a message) with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from mgcda_ros.spinning import Spinner

LOCALHOST = "LOCALHOST"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
NODE_COMMAND = (sys.executable, "-m", "mgcda_ros.node")


def ros_env(domain_id: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a ROS subprocess: loopback-only discovery in ``domain_id``."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = LOCALHOST
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the parent dies, so a killed test run leaves no node behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class NodeProcess:
    """``anomaly_node`` in a subprocess with parameters from a YAML file written beside its log; ``env`` adds or
    replaces environment variables of the subprocess, ``drop_env`` removes some (discovery stays on loopback in
    ``domain_id`` whatever they say)."""

    def __init__(self, params: Mapping[str, Any], domain_id: int, workdir: Path,
                 command: tuple[str, ...] = NODE_COMMAND, ros_args: tuple[str, ...] = (),
                 env: Mapping[str, str] | None = None, drop_env: tuple[str, ...] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.params_file = workdir / "anomaly_params.yaml"
        self.params_file.write_text(yaml.safe_dump({"/**/anomaly_node": {"ros__parameters": dict(params)}}))
        self.log_path = workdir / "anomaly_node.log"
        self._log = open(self.log_path, "wb")  # a file, not a pipe: a full pipe would block the node
        self.process = subprocess.Popen([*command, "--ros-args", "--params-file", str(self.params_file), *ros_args],
                                        env=ros_env(domain_id, {k: v for k, v in {**os.environ, **(env or {})}.items()
                                                                if k not in drop_env}),
                                        stdout=self._log, stderr=subprocess.STDOUT,
                                        preexec_fn=_die_with_parent)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 180.0) -> int:
        """SIGINT (clean shutdown), then SIGKILL if it does not exit in time; returns the exit status. The wait is
        long because a niced process on a busy 2-core machine took 116 s to exit (its own cleanup: 0.5 s)."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class CameraProcess:
    """``python -m mgcda_ros.camera_sender`` in a subprocess: a camera publishing 1280x720 bgr8 frames on ``topic``
    on demand, with its own Fast DDS settings (``env``: e.g. ``FASTDDS_DEFAULT_PROFILES_FILE``; discovery stays on
    loopback in ``domain_id`` whatever it says). ``send`` publishes one frame; ``sent`` maps frame_id to the
    monotonic time just before its publish (system-wide clock, comparable with this process's)."""

    def __init__(self, domain_id: int, env: Mapping[str, str] | None = None, topic: str = "/image",
                 width: int = 1280, height: int = 720, drop_env: tuple[str, ...] = ()) -> None:
        base = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop_env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mgcda_ros.camera_sender", "--topic", topic, "--width", str(width),
             "--height", str(height)], env=ros_env(domain_id, base), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=_die_with_parent)
        self.lines: list[str] = []
        self.sent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
                parts = line.split()
                if len(parts) == 3 and parts[0] == "sent":
                    self.sent[parts[1]] = float(parts[2])

    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_ready(self, timeout: float) -> None:
        """Until its publisher matched a subscriber (RuntimeError with its output if it exited first)."""
        def ready() -> bool:
            if self.process.poll() is not None and "ready" not in self.lines:
                raise RuntimeError(f"camera_sender exited with {self.process.returncode}:\n{self.output()}")
            return "ready" in self.lines
        wait_until(ready, timeout, "the camera's publisher to match a subscriber")

    def send(self, frame_id: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(frame_id + "\n")
        self.process.stdin.flush()

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=2.0)
        return self.process.returncode


class Inbox:
    """Messages received on one subscription, in arrival order, with their receive time (monotonic s)."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.items.append((time.monotonic(), msg))

    def messages(self) -> list[Any]:
        with self._lock:
            return [msg for _, msg in self.items]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()


class Peer:
    """An rclpy node in this process, in its own context and domain, spun by a background thread."""

    def __init__(self, name: str, domain_id: int) -> None:
        if os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") != LOCALHOST:
            raise RuntimeError("set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST before starting ROS in this process "
                               "(DDS discovery must stay on loopback)")
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = Spinner(self._executor, name=f"peer {name}")
        self._spinner.start()

    def subscribe(self, msg_type: Any, topic: str, depth: int = 100, reliable: bool = True,
                  raw: bool = False) -> Inbox:
        """An Inbox of the topic's messages; ``raw``: the serialized CDR bytes as they arrive (no conversion into
        Python objects, which for a 720p image costs rclpy milliseconds that a C++ subscriber does not pay)."""
        inbox = Inbox()
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(msg_type, topic, inbox, qos, raw=raw)
        return inbox

    def publisher(self, msg_type: Any, topic: str, depth: int = 1000, reliable: bool = True) -> Any:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
        return self.node.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        if not self._spinner.stop(timeout=10.0):
            raise RuntimeError(f"{self.node.get_name()}: a callback still runs 10 s after close()")
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)


def header_frame_id(message: Any) -> str:
    """``header.frame_id`` of a message with a std_msgs/Header first, deserialized or raw CDR bytes (read in place:
    4-byte encapsulation header, stamp sec and nanosec, then the string's uint32 length with its NUL)."""
    if not isinstance(message, bytes):
        return str(message.header.frame_id)
    if len(message) < 16 or message[0] != 0 or message[1] not in (0, 1):
        raise ValueError(f"not a plain CDR message (encapsulation {message[:2].hex()}, {len(message)} bytes)")
    length = int.from_bytes(message[12:16], "little" if message[1] == 1 else "big")
    if length < 1 or 16 + length > len(message):
        raise ValueError(f"CDR frame_id length {length} does not fit a {len(message)}-byte message")
    return message[16:16 + length - 1].decode()


def diagnostics_values(messages: list[Any], node_name: str = "anomaly_node") -> dict[str, str] | None:
    """Key/values of the newest /diagnostics status published by ``node_name`` (None if none yet)."""
    for array in reversed(messages):
        for status in array.status:
            if node_name in status.name:
                return {kv.key: kv.value for kv in status.values}
    return None
