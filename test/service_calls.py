"""Service calls of the ROS tests that survive a lost response.

Fast DDS drops a service's response when the service has not matched the client's response reader yet
(rmw_fastrtps gives up after a short wait: "client will not receive response"; rclpy logs "failed to send response
(timeout)"). On a busy machine the client's reader can be announced seconds after its request writer, so a request
that arrives gets no answer. A real client (nav2's lifecycle manager) times out and asks again; so do these
helpers, but only where asking again is safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from mgcda_ros.ros_process import wait_until

RESEND_AFTER = 10.0  # s without an answer; Fast DDS re-announces a lost endpoint within a few seconds

# transition id -> (the state it starts from, the state it ends in on success)
TRANSITIONS = {
    Transition.TRANSITION_CONFIGURE: ("unconfigured", "inactive"),
    Transition.TRANSITION_ACTIVATE: ("inactive", "active"),
    Transition.TRANSITION_DEACTIVATE: ("active", "inactive"),
    Transition.TRANSITION_CLEANUP: ("inactive", "unconfigured"),
}


def _first_done(futures: list[Any], wait: float, what: str) -> Any | None:
    try:
        return wait_until(lambda: next((f for f in futures if f.done()), None), wait, what)
    except TimeoutError:
        return None


def answer(send: Callable[[], Any], what: str, timeout: float) -> Any:
    """The result of ``send()`` (a call returning a future, for a request that is safe to repeat: a query, SetBool,
    setting parameters), sent again every RESEND_AFTER s without an answer; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    futures = [send()]
    while (done := _first_done(futures, min(RESEND_AFTER, max(deadline - time.monotonic(), 0.0)), what)) is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no answer from {what} in {timeout:.0f} s ({len(futures)} requests sent)")
        futures.append(send())
    return done.result()


def lifecycle_state(get_state: Any, timeout: float) -> str:
    """The label of a lifecycle node's current state."""
    return answer(lambda: get_state.call_async(GetState.Request()), get_state.srv_name, timeout).current_state.label


def change_state(change: Any, get_state: Any, transition_id: int, timeout: float) -> bool:
    """Whether a lifecycle transition succeeded. Without an answer, the node's state decides: the transition's goal
    state means it ran and its answer was lost; the state it starts from means it did not run or failed, and it is
    requested again; any other state (e.g. "configuring") means it is still running."""
    start, goal = TRANSITIONS[transition_id]
    request = ChangeState.Request()
    request.transition.id = transition_id
    deadline = time.monotonic() + timeout
    futures = [change.call_async(request)]
    while (done := _first_done(futures, min(RESEND_AFTER, max(deadline - time.monotonic(), 0.0)),
                               change.srv_name)) is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no answer from {change.srv_name} in {timeout:.0f} s ({len(futures)} requests sent)")
        state = lifecycle_state(get_state, deadline - time.monotonic())
        if state == goal:
            return True
        if state == start:
            futures.append(change.call_async(request))
    return bool(done.result().success)
