"""Training curves read back from a run's TensorBoard event files: τ, domain-classifier accuracy per domain,
every loss term and the CACL counts, as one PNG; and the numbers that say whether adversarial training worked
(the classifiers' accuracy should approach chance, 0.5, as τ → 0.5)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from mgcda_core.utils.atomic import atomic_write_with


class Series(NamedTuple):
    steps: np.ndarray   # int64, increasing
    values: np.ndarray  # float64


def read_scalars(log_dir: str | os.PathLike[str]) -> dict[str, Series]:
    """Every scalar tag under ``log_dir`` (all points, no sampling), sorted by step; the last value wins per step
    (a resumed run rewrites the steps after its checkpoint)."""
    log_dir = Path(log_dir)
    if not any(log_dir.glob("events.out.tfevents.*")):
        raise FileNotFoundError(f"{log_dir}: no TensorBoard event files (events.out.tfevents.*)")
    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()[SCALARS]:
        by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
        steps = np.array(sorted(by_step), dtype=np.int64)
        series[tag] = Series(steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return series


def _panels(scalars: dict[str, Series]) -> list[tuple[str, list[str]]]:
    """(title, tags) per panel, only for tags the run logged: τ, accuracies, one panel per loss term, CACL counts."""
    panels = []
    if "mdat/tau" in scalars:
        panels.append(("τ (eq. 1)", ["mdat/tau"]))
    accuracy = sorted(t for t in scalars if t.startswith("mdat/acc_"))
    for title, tags in (("domain classifier accuracy, all pixels (chance 0.5)",
                         [t for t in accuracy if not t.endswith("_anomaly")]),
                        ("domain classifier accuracy, anomaly pixels (chance 0.5)",
                         [t for t in accuracy if t.endswith("_anomaly")])):
        if tags:
            panels.append((title, tags))
    gaps = sorted(t for t in scalars if t.startswith("mdat/gap_"))
    if gaps:
        panels.append(("domain gap mean P_V − mean P_A (0: not separated)", gaps))
    panels += [(tag.removeprefix("loss/"), [tag]) for tag in sorted(t for t in scalars if t.startswith("loss/"))]
    counts = sorted(t for t in scalars if t.startswith("cacl/") and not t.endswith("_fill"))
    if counts:
        panels.append(("CACL pixels drawn per step", counts))
    fills = sorted(t for t in scalars if t.startswith("cacl/") and t.endswith("_fill"))
    if fills:
        panels.append(("CACL set fill (1 = full)", fills))
    return panels


def plot_training_curves(scalars: dict[str, Series], path: str | os.PathLike[str], title: str = "") -> list[str]:
    """Write the curves as one PNG (atomically); returns the panel titles drawn. Needs at least one loss term."""
    panels = _panels(scalars)
    if not any(tags[0].startswith("loss/") for _, tags in panels):
        raise ValueError(f"no loss/* scalars to plot (tags: {sorted(scalars)}); is this a training log?")
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(5 * columns, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, (panel_title, tags) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for tag in tags:
            axes.plot(scalars[tag].steps, scalars[tag].values, label=tag, linewidth=1)
        if panel_title.startswith("domain classifier"):
            axes.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
            axes.set_ylim(-0.02, 1.02)
        if panel_title.startswith("domain gap"):
            axes.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
        axes.set_title(panel_title, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        if len(tags) > 1:
            axes.legend(fontsize=6)
    if title:
        figure.suptitle(title, fontsize=10)
    atomic_write_with(path, lambda buffer: figure.savefig(buffer, format="png", dpi=100))
    return [panel_title for panel_title, _ in panels]


def adversarial_summary(scalars: dict[str, Series], fraction: float = 0.1) -> dict[str, dict[str, float]]:
    """Mean of each classifier-accuracy, τ and CACL-fill series over the first and the last ``fraction`` of its
    logged points: {tag: {"start": ..., "end": ...}}. Adversarial training works when accuracies end near 0.5."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must lie in (0, 0.5], got {fraction}")
    summary = {}
    for tag, series in scalars.items():
        if not (tag.startswith("mdat/") or tag.endswith("_fill")):
            continue
        n = max(1, int(round(fraction * len(series.values))))
        summary[tag] = {"start": float(series.values[:n].mean()), "end": float(series.values[-n:].mean())}
    return summary
