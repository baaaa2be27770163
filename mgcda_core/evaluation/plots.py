"""PR and ROC curve plots (PNG, written atomically; matplotlib's Agg canvas, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mgcda_core.evaluation.curves import Curve
from mgcda_core.utils.atomic import atomic_write_with

MAX_PLOT_POINTS = 4000


def _thin(num_points: int) -> np.ndarray:
    """Indices of at most MAX_PLOT_POINTS evenly spread points, first and last kept (exact curves have millions)."""
    if num_points <= MAX_PLOT_POINTS:
        return np.arange(num_points)
    return np.unique(np.linspace(0, num_points - 1, MAX_PLOT_POINTS).round().astype(np.int64))


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    atomic_write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return path


def write_curve_plots(out_dir: str | os.PathLike[str], curve: Curve, metrics: dict, title: str = "") -> tuple[Path, Path]:
    """Write ``pr_curve.png`` and ``roc_curve.png`` to ``out_dir``; returns their paths.

    ``metrics`` supplies the AP, FPR95 and AUROC shown in the legends.
    """
    out_dir = Path(out_dir)
    full = curve.with_end_points()
    keep = _thin(full.tps.size)
    recall, precision = full.tpr[keep], full.precision[keep]
    fpr, tpr = full.fpr[keep], full.tpr[keep]

    pr = Figure(figsize=(5, 4.5))
    ax = pr.add_subplot()
    ax.plot(recall, precision, drawstyle="steps-pre", label=f"AP = {metrics['AP']:.4f}")
    ax.axhline(curve.num_pos / (curve.num_pos + curve.num_neg), color="grey", linestyle=":", label="chance")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"PR {title}".strip())
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    pr.tight_layout()

    roc = Figure(figsize=(5, 4.5))
    ax = roc.add_subplot()
    ax.plot(fpr, tpr, label=f"AUROC = {metrics['AUROC']:.4f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.axhline(0.95, color="tab:red", linewidth=0.8, linestyle="--", label=f"FPR95 = {metrics['FPR95']:.4f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
           title=f"ROC {title}".strip())
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    roc.tight_layout()
    return _save(pr, out_dir / "pr_curve.png"), _save(roc, out_dir / "roc_curve.png")
