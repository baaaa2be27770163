"""The planner benchmark's account of incomplete frames (pure: ids, arrivals and the node's per-frame log)."""

from __future__ import annotations

from mgcda_ros.benchmark import _incomplete


def test_every_frame_complete_leaves_nothing_to_explain() -> None:
    assert _incomplete(["a", "b"], {"a": 1.0, "b": 2.0}, {"a": {"model": 80.0}, "b": {"model": 81.0}}) == ""


def test_a_missing_frame_is_told_apart_by_whether_the_node_processed_it() -> None:
    ids = ["a", "b", "c", "d"]
    complete = {"a": 1.0}
    logged = {"a": {"model": 80.0}, "c": {"model": 82.0}}  # b and d never reached the node's worker
    assert _incomplete(ids, complete, logged) == "2 not processed by the node, 1 outputs not all received"
