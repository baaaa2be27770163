"""What the node's /diagnostics status says: one level and message per concern, from recent evidence only.

Concerns follow diagnostic_updater's conventions (as Autoware's perception nodes use them): each is judged on
its own, the status takes the worst level, and a level clears by itself once its cause is gone (errors, stale
and rejected frames count only while they occurred within the last ``window_s`` seconds).
"""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class Evidence:
    """A snapshot of the node's state and recent counts (``silent_s``: seconds without a frame while running)."""

    state: str  # unconfigured | loading | inactive | disabled | running
    topic: str
    silent_s: float
    input_timeout_s: float
    window_s: float
    errors: int = 0
    last_error: str = ""
    stale: int = 0
    clock_offset_ms: float = 0.0
    rejected: int = 0
    last_rejection: str = ""
    input_rate_hz: float = 0.0
    processed_rate_hz: float = 0.0


def assess(e: Evidence) -> tuple[int, str]:
    """(level, message): the worst concern's level and every raised concern's message, joined."""
    if e.state != "running":
        messages = {"unconfigured": "unconfigured (lifecycle): no model loaded", "loading": "loading the model",
                    "inactive": "inactive (lifecycle): model loaded, not subscribed",
                    "disabled": "disabled (parameter enable / ~/enable): frames are ignored"}
        return OK, messages[e.state]
    window = f"in the last {e.window_s:g} s"
    concerns: list[tuple[int, str]] = []
    if e.errors:
        concerns.append((ERROR, f"{e.errors} inference error(s) {window} (last: {e.last_error})"))
    if e.silent_s >= e.input_timeout_s:
        concerns.append((WARN, f"no frame on {e.topic} for {e.silent_s:.0f} s"))
    if e.stale:
        concerns.append((WARN, f"{e.stale} frame(s) dropped as stale {window}: stamped {e.clock_offset_ms / 1e3:.1f} s "
                               "before the node's clock (bag without --clock / use_sim_time, or unsynced clocks)"))
    if e.rejected:
        concerns.append((WARN, f"{e.rejected} input(s) rejected {window} (last: {e.last_rejection})"))
    if e.input_rate_hz > 0 and e.processed_rate_hz == 0 and not (e.stale or e.rejected or e.errors):
        concerns.append((WARN, "receiving frames but publishing none"))
    if not concerns:
        return OK, "running"
    return max(level for level, _ in concerns), "; ".join(message for _, message in concerns)
