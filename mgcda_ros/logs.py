"""Python ``logging`` records of ``mgcda_core`` (runtime choice, ONNX export, engine cache) to a node's rclpy
logger, so they reach the console and /rosout like the node's own lines."""

from __future__ import annotations

import logging
from typing import Any

CORE_LOGGER = "mgcda_core"


class RosLogHandler(logging.Handler):
    """Forwards each record to an rclpy logger at the matching severity (rclpy's levels are logging's numbers)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__()
        self._ros = ros_logger
        self.setFormatter(logging.Formatter("[%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.CRITICAL:
                self._ros.fatal(text)
            elif record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            elif record.levelno >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)


def forward_core_logs(ros_logger: Any) -> RosLogHandler:
    """Attach a :class:`RosLogHandler` to the ``mgcda_core`` logger at the rclpy logger's level (``--log-level``
    applies to both); returns it for :func:`stop_forwarding`."""
    handler = RosLogHandler(ros_logger)
    core = logging.getLogger(CORE_LOGGER)
    core.addHandler(handler)
    core.setLevel(int(ros_logger.get_effective_level()))
    core.propagate = False  # printed once, by rclpy, not again by a root handler
    return handler


def stop_forwarding(handler: RosLogHandler) -> None:
    core = logging.getLogger(CORE_LOGGER)
    core.removeHandler(handler)
    core.propagate = True
