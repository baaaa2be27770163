"""Gallery of the best and worst frames: image / ground truth / score / overlay, as a grid and as panels.

Frames are picked while streaming (``FrameSelector`` keeps only the k best and k worst), so a gallery of a
long evaluation holds 2k frames in memory, not all of them.
"""

from __future__ import annotations

import heapq
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mgcda_core.utils.atomic import atomic_write_with
from mgcda_core.utils.images import to_rgb, write_png

# label colours: normal, anomaly, void
NORMAL_RGB = (70, 130, 70)
ANOMALY_RGB = (255, 40, 40)
VOID_RGB = (0, 0, 0)
PANELS = ("image", "ground_truth", "score", "overlay")


@dataclass(frozen=True)
class GalleryFrame:
    """One frame to show: RGB image, label map {0, 1, 255}, score map and the value it was ranked by."""

    name: str
    image: np.ndarray
    label: np.ndarray
    score: np.ndarray
    rank_value: float


class FrameSelector:
    """Keeps the ``k`` frames with the highest and the ``k`` with the lowest ``rank_value`` seen so far."""

    def __init__(self, k: int) -> None:
        if k < 0:
            raise ValueError(f"gallery size must be >= 0, got {k}")
        self.k = k
        self._best: list[tuple[float, int, GalleryFrame]] = []   # min-heap on value: the smallest of the best
        self._worst: list[tuple[float, int, GalleryFrame]] = []  # min-heap on -value: the largest of the worst
        self._counter = itertools.count()

    def offer(self, frame: GalleryFrame) -> None:
        if self.k == 0:
            return
        order = next(self._counter)
        for heap, key in ((self._best, frame.rank_value), (self._worst, -frame.rank_value)):
            if len(heap) < self.k:
                heapq.heappush(heap, (key, -order, frame))
            elif key > heap[0][0]:
                heapq.heapreplace(heap, (key, -order, frame))

    def _split(self) -> tuple[list[GalleryFrame], list[GalleryFrame]]:
        ranked = sorted({id(e[2]): e for e in self._best + self._worst}.values(), key=lambda e: (-e[2].rank_value, -e[1]))
        frames = [entry[2] for entry in ranked]
        # fewer than 2k frames seen: both heaps hold all of them; split so no frame is both best and worst
        half = min(self.k, (len(frames) + 1) // 2)
        return frames[:half], frames[half:][::-1][: self.k]

    def best(self) -> list[GalleryFrame]:
        """Best first; disjoint from ``worst()``."""
        return self._split()[0]

    def worst(self) -> list[GalleryFrame]:
        """Worst first; disjoint from ``best()``."""
        return self._split()[1]


def label_rgb(label: np.ndarray) -> np.ndarray:
    """Colour a {0, 1, 255} label map: normal green-grey, anomaly red, void black."""
    out = np.zeros(label.shape + (3,), dtype=np.uint8)
    out[label == 0] = NORMAL_RGB
    out[label == 1] = ANOMALY_RGB
    out[label == 255] = VOID_RGB
    return out


def score_rgb(score: np.ndarray) -> np.ndarray:
    """Score map as a magma heat map, stretched between the frame's 1st and 99th percentile."""
    low, high = np.percentile(score, [1.0, 99.0])
    normalised = np.clip((score - low) / max(float(high - low), 1e-12), 0.0, 1.0)
    return (matplotlib.colormaps["magma"](normalised)[..., :3] * 255).round().astype(np.uint8)


def overlay_rgb(image: np.ndarray, score: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The image tinted by the heat map, stronger where the score is higher."""
    heat = score_rgb(score).astype(np.float32)
    low, high = np.percentile(score, [1.0, 99.0])
    weight = alpha * np.clip((score - low) / max(float(high - low), 1e-12), 0.0, 1.0)[..., None]
    return (image.astype(np.float32) * (1 - weight) + heat * weight).round().astype(np.uint8)


def panels(frame: GalleryFrame) -> dict[str, np.ndarray]:
    image = to_rgb(frame.image)
    return {
        "image": image,
        "ground_truth": label_rgb(frame.label),
        "score": score_rgb(frame.score),
        "overlay": overlay_rgb(image, frame.score),
    }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def write_gallery(out_dir: str | os.PathLike[str], best: list[GalleryFrame], worst: list[GalleryFrame],
                  rank_name: str = "AP") -> list[Path]:
    """Write ``gallery.png`` (one row per frame, four panels) and each panel as its own PNG under ``out_dir``.

    Returns the written paths (grid first).
    """
    out_dir = Path(out_dir)
    rows = [("best", i, f) for i, f in enumerate(best, 1)] + [("worst", i, f) for i, f in enumerate(worst, 1)]
    if not rows:
        return []
    written: list[Path] = []
    fig = Figure(figsize=(4 * 3.2, len(rows) * 2.0 + 0.3))
    for row, (kind, index, frame) in enumerate(rows):
        images = panels(frame)
        for col, panel in enumerate(PANELS):
            path = out_dir / f"{kind}_{index:02d}_{_safe(frame.name)}_{panel}.png"
            write_png(path, images[panel])
            written.append(path)
            ax = fig.add_subplot(len(rows), len(PANELS), row * len(PANELS) + col + 1)
            ax.imshow(images[panel])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_title(f"{kind} {index}: {frame.name[:28]} ({rank_name} {frame.rank_value:.3f})",
                             fontsize=7, loc="left")
            elif row == 0:
                ax.set_title(panel.replace("_", " "), fontsize=8)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    grid = out_dir / "gallery.png"
    atomic_write_with(grid, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return [grid, *written]
