"""Diagnostics for CACL's pixel sampling (docs/RESULTS.md): is a domain's anchor/positive set full?

Per image CACL wants N_a anchor and 2·N_a positive anomaly pixels (MGCDA section 3.3); a domain whose images
hold fewer anomaly pixels silently contrasts fewer pixels.

- :class:`AnchorShortfallMonitor` (the trainer calls it every step with ``PixelSample.counts``): fill ratios as
  scalars and a throttled warning when a domain's anchor (or positive) set is not full.
- :func:`anomaly_pixel_census` (once, from a label folder): how many frames can fill the sets at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgcda_core.losses.cacl import DOMAIN_NAMES, POSITIVE_FACTOR
from mgcda_core.utils.images import read_label

LOGGER = logging.getLogger("mgcda_core.training")


def set_fill(counts: Mapping[str, int], domain: str, kind: str) -> float | None:
    """Drawn / requested for ``kind`` ("anchors" or "positives") of ``domain`` in one step; None without images.

    Requested = drawn + the shortfall ``PixelSample.counts`` reports (images · N_a anchors, images · 2·N_a
    positives, as ``mgcda_core.losses.cacl`` asks for).
    """
    if kind not in ("anchors", "positives"):
        raise ValueError(f"kind must be 'anchors' or 'positives', got {kind!r}")
    if int(counts[f"{domain}/images"]) == 0:
        return None
    drawn = int(counts[f"{domain}/{kind}"])
    return drawn / (drawn + int(counts[f"{domain}/{kind}_shortfall"]))


@dataclass
class AnchorShortfallMonitor:
    """Per-step fill ratios of the CACL anchor/positive sets and a warning when a domain cannot fill them.

    ``update(step, sample.counts)`` returns scalars ``cacl/<D>/anchor_fill`` and ``cacl/<D>/positive_fill``
    (1 = full) for TensorBoard and logs a warning the first time a domain's anchor set is short, then at most
    once per ``report_every`` steps with the number of short steps since the last report.
    """

    n_anchor: int
    report_every: int = 100
    logger: logging.Logger = field(default=LOGGER, repr=False)
    _short: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _last_report: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_anchor < 1 or self.report_every < 1:
            raise ValueError(f"n_anchor and report_every must be >= 1, got {self.n_anchor}, {self.report_every}")

    def update(self, step: int, counts: Mapping[str, int]) -> dict[str, float]:
        scalars: dict[str, float] = {}
        for domain in DOMAIN_NAMES:
            anchors = set_fill(counts, domain, "anchors")
            positives = set_fill(counts, domain, "positives")
            if anchors is None:
                continue
            assert positives is not None  # set_fill gives None for both kinds exactly when the domain has no images
            scalars[f"cacl/{domain}/anchor_fill"] = anchors
            scalars[f"cacl/{domain}/positive_fill"] = positives
            if anchors < 1.0:
                self._short[domain] = self._short.get(domain, 0) + 1
            self._maybe_warn(step, domain, anchors, positives)
        return scalars

    def _maybe_warn(self, step: int, domain: str, anchors: float, positives: float) -> None:
        short = self._short.get(domain, 0)
        last = self._last_report.get(domain)
        if short == 0 or (last is not None and step - last < self.report_every):
            return
        self.logger.warning(
            "CACL step %d: domain %s filled %.0f%% of its anchor set and %.0f%% of its positive set "
            "(%d short step(s) since the last report); its images hold fewer than N_a = %d anomaly pixels "
            "(anchors) / 3·N_a (anchors + positives). Lower cacl.n_anchor or check the domain's labels.",
            step, domain, 100 * anchors, 100 * positives, short, self.n_anchor)
        self._short[domain] = 0
        self._last_report[domain] = step


def anomaly_pixel_census(label_dir: str | os.PathLike[str], n_anchor: int) -> dict[str, float | int]:
    """How many frames of a label folder (0 normal, 1 anomaly, 255 ignore) can fill CACL's sets.

    Returns frames, frames_with_anomaly, frames_short_of_anchors (< N_a anomaly pixels), frames_short_of_positives
    (< 3·N_a: anchors plus disjoint positives), median_anomaly_pixels and anomaly_ratio (anomaly / labelled).
    """
    folder = Path(label_dir)
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no label PNGs (expected a training layout labels/ folder)")
    if n_anchor < 1:
        raise ValueError(f"n_anchor must be >= 1, got {n_anchor}")
    per_frame = np.array([np.bincount(read_label(p).ravel(), minlength=256)[[0, 1]] for p in paths])
    anomaly = per_frame[:, 1]
    return {
        "frames": len(paths),
        "frames_with_anomaly": int((anomaly > 0).sum()),
        "frames_short_of_anchors": int((anomaly < n_anchor).sum()),
        "frames_short_of_positives": int((anomaly < (1 + POSITIVE_FACTOR) * n_anchor).sum()),
        "median_anomaly_pixels": float(np.median(anomaly)),
        "anomaly_ratio": float(anomaly.sum() / max(int(per_frame.sum()), 1)),
    }


def census_warning(name: str, census: Mapping[str, float | int], n_anchor: int) -> str | None:
    """One warning line when some frames of domain ``name`` cannot fill the anchor set, else None."""
    short = int(census["frames_short_of_anchors"])
    if short == 0:
        return None
    return (f"{name}: {short} of {census['frames']} frames have fewer than N_a = {n_anchor} anomaly pixels "
            f"(median {census['median_anomaly_pixels']:.0f}); CACL's anchor set cannot be filled from them")
