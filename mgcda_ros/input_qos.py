"""The input subscription, with a reliability that follows the topic's publishers.

A best-effort reader of a reliable publisher of large images loses most frames (each frame is many UDP
fragments and a best-effort reader never asks for a lost one again: measured on a stock Linux host, 0 of 30
1280x720 rgb8 frames arrived), while a reliable reader never matches a best-effort publisher (REP 2003,
"Sensor data and map QoS settings"; the ROS 2 "Quality of Service settings" page lists the compatibility
rules). So ``auto`` subscribes reliable when every discovered publisher is reliable and best effort otherwise
(also while none is known: best effort matches any publisher), and re-checks as publishers come and go, like
image_proc's ``getTopicQosProfile``. A subscription's QoS cannot change, so a change recreates it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.subscription import Subscription

RECHECK_PERIOD_S = 0.5
_NAMES = {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT: "best_effort"}


def reliability_for(offered: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy:
    """Reliable when every publisher offers reliable (and there is at least one), best effort otherwise."""
    offered = list(offered)
    if offered and all(policy == ReliabilityPolicy.RELIABLE for policy in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


class InputSubscription:
    """Subscribes ``topic`` with keep-last ``depth`` and the reliability ``mode`` asks for ("auto",
    "reliable", "best_effort"); in auto mode a timer re-checks the publishers every ``RECHECK_PERIOD_S``."""

    def __init__(self, node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None], mode: str,
                 depth: int, group: CallbackGroup | None = None) -> None:
        self._node, self._type, self._topic, self._callback = node, msg_type, topic, callback
        self._mode, self._depth, self._group = mode, depth, group
        self.reliability = (ReliabilityPolicy.RELIABLE if mode == "reliable" else ReliabilityPolicy.BEST_EFFORT)
        self._subscription = self._subscribe()
        #: the fully resolved topic (namespace and remappings applied); kept as text, so that other threads
        #: (diagnostics) never touch a subscription handle that a recheck or deactivate is destroying
        self.topic_name = str(self._subscription.topic_name)
        self._timer = (node.create_timer(RECHECK_PERIOD_S, self.recheck, callback_group=group)
                       if mode == "auto" else None)

    def publisher_reliabilities(self) -> list[ReliabilityPolicy]:
        return [info.qos_profile.reliability for info in self._node.get_publishers_info_by_topic(self.topic_name)]

    def recheck(self) -> None:
        """Recreate the subscription when the publishers now call for the other reliability."""
        offered = self.publisher_reliabilities()
        wanted = reliability_for(offered)
        if wanted == self.reliability:
            return
        self._node.get_logger().info(
            f"input {self.topic_name}: {len(offered)} publisher(s) offering "
            f"{', '.join(sorted(_NAMES.get(p, str(p)) for p in offered)) or 'nothing'}: subscribing "
            f"{_NAMES[wanted]} (qos_reliability auto)")
        self._node.destroy_subscription(self._subscription)
        self.reliability = wanted
        self._subscription = self._subscribe()

    def close(self) -> None:
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
        self._node.destroy_subscription(self._subscription)

    def _subscribe(self) -> Subscription[Any]:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._depth, reliability=self.reliability)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible)
        return self._node.create_subscription(self._type, self._topic, self._callback, qos, event_callbacks=events,
                                              callback_group=self._group)

    def _on_incompatible(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        policy = qos_policy_name_from_kind(info.last_policy_kind)
        if self._mode == "auto":  # the next recheck follows the publisher; say so once per event
            self._node.get_logger().info(f"input {self.topic_name}: a publisher is incompatible with this "
                                         f"{_NAMES[self.reliability]} subscription ({policy}); following it")
            return
        hint = ("set qos_reliability: auto (or best_effort) for a best-effort camera" if policy == "RELIABILITY"
                else "make the publisher's QoS compatible (keep last, volatile)")
        self._node.get_logger().warning(
            f"input {self.topic_name}: {info.total_count} publisher(s) with QoS incompatible with this node's "
            f"{_NAMES[self.reliability]} subscription (policy {policy}): no frame from them arrives; {hint}")


def output_event_callbacks(node: Node, topic: str) -> PublisherEventCallbacks:
    """Log a subscriber whose requested QoS the output publisher (reliable, volatile, keep last 1) cannot offer."""

    def incompatible(info: Any) -> None:
        node.get_logger().warning(
            f"output {topic}: {info.total_count} subscriber(s) request QoS this node does not offer (policy "
            f"{qos_policy_name_from_kind(info.last_policy_kind)}); outputs are reliable, volatile, keep last 1: "
            "subscribe with volatile durability (reliable or best effort both match)")

    return PublisherEventCallbacks(incompatible_qos=incompatible)
