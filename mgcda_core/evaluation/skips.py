"""Frames left out of an evaluation: recorded in ``metrics.json`` and, unless accepted, a failure.

A metric over a silently chosen subset of the frames is not the metric that was asked for, so the commands
that score a set of frames (evaluate, rosbag replay) write ``skipped_frames`` (count) and ``skipped`` (names)
and end with an error unless the user passed ``--allow-skips``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mgcda_core.errors import DataError

SHOWN = 3  # skipped frames named in the error line (metrics.json names all)


class SkippedFramesError(DataError):
    """Frames were skipped and the user did not pass ``--allow-skips``."""


@dataclass
class SkippedFrames:
    names: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, name: str, reason: str) -> None:
        self.names.append(name)
        self.reasons.append(reason)

    def as_metrics(self) -> dict[str, object]:
        return {"skipped_frames": len(self.names), "skipped": list(self.names)}

    def check(self, allowed: bool, total: int, where: str) -> None:
        """Raise SkippedFramesError naming the first skips unless none were skipped or ``allowed``."""
        if self.names and not allowed:
            shown = "; ".join(self.reasons[:SHOWN]) + ("; ..." if len(self.names) > SHOWN else "")
            raise SkippedFramesError(f"{len(self.names)} of {total} frames were skipped ({shown}); {where} covers "
                                     "the others only: fix the input or pass --allow-skips to accept that")
