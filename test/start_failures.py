"""Shared check of the ROS tests: a node that must not start exits with status 2 and one fatal line."""

from __future__ import annotations

from collections.abc import Mapping

from mgcda_ros.ros_process import NodeProcess


def assert_refused_in_one_line(procs: Mapping[str, NodeProcess], expected: Mapping[str, str], timeout: float) -> None:
    """Each process of ``procs`` exits with status 2 having printed exactly one line, "cannot start: " followed by
    ``expected[name]``, and no traceback. The processes are stopped either way."""
    for name, proc in procs.items():  # started together by the caller: they import concurrently
        code = proc.wait_exit(timeout=timeout)
        output = proc.output()
        proc.stop()
        assert code == 2, output
        assert "Traceback" not in output and output.strip().count("\n") == 0, output  # one line
        assert f"cannot start: {expected[name]}" in output, output
