"""``anomaly_lifecycle_node``: the anomaly node as a managed (lifecycle) node, for stacks that sequence their
nodes (ROS 2 design article "Managed nodes"; ``ros2 lifecycle set``, nav2's lifecycle manager).

Transitions: configure loads the model (building a TensorRT engine when that backend is chosen) and creates the
outputs; activate subscribes the input and starts the worker; deactivate unsubscribes and pauses; cleanup
destroys the outputs and frees the model. Parameters, ``~/enable`` and /diagnostics (which report the state,
and "loading the model" during configure) exist in every state. Topics, parameters and outputs are those of
``anomaly_node``.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from mgcda_ros.model_loading import ModelLoadError
from mgcda_ros.node import (
    NODE_NAME,
    AnomalyDetection,
    declare_parameters,
    init_with_python_signals,
    serve,
)
from mgcda_ros.params import ParameterError
from mgcda_ros.spinning import Spinner
from mgcda_ros.transport import apply_default_profile


class ManagedAnomalyNode(LifecycleNode):
    """``anomaly_node`` driven by lifecycle transitions; starts unconfigured."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        # its own group: with a multi-threaded executor, diagnostics keep coming while configure loads the model
        self.detection = AnomalyDetection(self, declare_parameters(self), MutuallyExclusiveCallbackGroup())

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.detection.configure()
        except ModelLoadError as err:
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.detection.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.detection.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.detection.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.detection.state == "running":
            self.detection.deactivate()
        if self.detection.state == "inactive":
            self.detection.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_shutdown(state)


def main(args: list[str] | None = None) -> int:
    """Console script ``anomaly_lifecycle_node``: exit status 0 on shutdown, 2 on invalid parameters."""
    profile = apply_default_profile()  # before rclpy.init, as in anomaly_node: the same Fast DDS profile
    init_with_python_signals(args)  # as anomaly_node: Ctrl-C / SIGTERM end the process in order, from this thread
    executor = MultiThreadedExecutor()

    def run(node: ManagedAnomalyNode, spinner: Spinner) -> None:
        node.get_logger().info(f"transport: {profile.reason}")
        spinner.start()
        spinner.wait()

    return serve(executor, ManagedAnomalyNode, run, (ParameterError,))


if __name__ == "__main__":
    sys.exit(main())
