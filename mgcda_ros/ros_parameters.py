"""``NodeParams`` as ROS parameters: one descriptor per parameter, validation of run-time changes, and a report of
names in the parameters file that the node does not know.

Run-time changes go through ``NodeParams`` as a whole (the same checks as at start-up); a refused change returns
the reason to the caller (``ros2 param set`` prints it). Parameters whose change needs a restart are read-only
(rcl_interfaces/ParameterDescriptor), so ROS itself refuses to change them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mgcda_ros.params import NodeParams, ParameterError, ParameterSpec

_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def descriptor(name: str, default: Any, spec: ParameterSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter (a new object each: rclpy keeps and mutates what it is given)."""
    described = ParameterDescriptor(name=name, type=_ROS_TYPES[type(default)], description=spec.description,
                                    additional_constraints=spec.constraints(), read_only=not spec.runtime,
                                    # integers for doubles ("threshold: 1") and wrong types reach NodeParams, which
                                    # converts the first and refuses the second naming the parameter
                                    dynamic_typing=True)
    if spec.low is not None and spec.high is not None:
        if isinstance(default, float):
            described.floating_point_range = [FloatingPointRange(from_value=spec.low, to_value=spec.high, step=0.0)]
        else:
            described.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                                    step=max(spec.step, 1))]
    return described


def declare(node: Node) -> dict[str, Any]:
    """Declare every ``NodeParams`` field on ``node`` (values from the parameters file where given); a value
    outside its descriptor's range raises ParameterError naming the parameter and the range."""
    defaults, specs = NodeParams().as_dict(), NodeParams.specs()
    values = {}
    for name, default in defaults.items():
        try:
            values[name] = node.declare_parameter(name, default, descriptor(name, default, specs[name])).value
        except InvalidParameterValueException:
            # rclpy's range check came first; NodeParams words the refusal like every other one
            NodeParams.from_mapping({name: node._parameter_overrides[name].value})
            raise
    return values


def current(node: Node) -> NodeParams:
    """The node's parameter values as a validated ``NodeParams`` (ParameterError naming a bad one)."""
    return NodeParams.from_mapping({name: node.get_parameter(name).value for name in NodeParams.specs()})


def unknown_overrides(node: Node) -> list[str]:
    """Names the parameters file (or ``-p``) sets for this node that it never declared: typos, or parameters of
    another version. ROS ignores them silently, so the node reports them."""
    # rclpy keeps a node's overrides only in this attribute; there is no public accessor.
    overrides = node._parameter_overrides
    return sorted(name for name in overrides if not node.has_parameter(name))


def watch(node: Node, apply: Callable[[NodeParams], None]) -> None:
    """Validate every change to a ``NodeParams`` parameter through ``NodeParams`` and hand accepted values to
    ``apply`` (called after ROS stored them, so ``get_parameters`` and the node agree)."""
    names = set(NodeParams.specs())
    floats = {name for name, value in NodeParams().as_dict().items() if isinstance(value, float)}

    def as_double(changes: list[Parameter[Any]]) -> list[Parameter[Any]]:
        # `ros2 param set threshold 1` sends an integer: store it as the double the parameter is
        return [Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
                if p.name in floats and p.type_ == Parameter.Type.INTEGER else p for p in changes]

    def validate(changes: list[Parameter[Any]]) -> SetParametersResult:
        mine = {p.name: p.value for p in changes if p.name in names}
        if not mine:
            return SetParametersResult(successful=True)
        try:
            NodeParams.from_mapping({**current(node).as_dict(), **mine})
        except ParameterError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def stored(changes: list[Parameter[Any]]) -> None:
        if any(p.name in names for p in changes):
            apply(current(node))

    node.add_pre_set_parameters_callback(as_double)
    node.add_on_set_parameters_callback(validate)
    node.add_post_set_parameters_callback(stored)
