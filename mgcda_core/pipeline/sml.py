"""Standardised max logit (SML, Jung et al. ICCV 2021, eq. 2) per-class statistics: streaming accumulation
and the JSON file stored next to the segmentation model."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mgcda_core.constants import NUM_CLASSES
from mgcda_core.errors import DataError, MissingInputError
from mgcda_core.utils.atomic import atomic_write_json

MIN_PIXELS = 2  # a class needs at least this many predicted pixels for a standard deviation


def default_stats_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the statistics of ``model_path`` live: beside it, ``<stem>.sml.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".sml.json")


@dataclass
class SMLAccumulator:
    """Per predicted class: count, Σ max logit, Σ max logit² over all pixels seen (float64, streaming)."""

    num_classes: int = NUM_CLASSES
    count: np.ndarray = field(init=False)
    total: np.ndarray = field(init=False)
    total_sq: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.num_classes, np.float64)
        self.total = np.zeros(self.num_classes, np.float64)
        self.total_sq = np.zeros(self.num_classes, np.float64)

    def update(self, logits: torch.Tensor) -> None:
        """Add N x C x H x W logits: group each pixel's max logit by its argmax class (bincount, no loops)."""
        top_t, index_t = logits.detach().double().max(1)
        index, top = index_t.flatten().cpu().numpy(), top_t.flatten().cpu().numpy()
        self.count += np.bincount(index, minlength=self.num_classes)
        self.total += np.bincount(index, weights=top, minlength=self.num_classes)
        self.total_sq += np.bincount(index, weights=top * top, minlength=self.num_classes)

    def result(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(mean, std, fallback classes). Classes with fewer than ``MIN_PIXELS`` pixels get the statistics of
        all pixels pooled (listed as fallback) instead of undefined values."""
        if self.count.sum() < MIN_PIXELS:
            raise ValueError("no pixels accumulated: cannot compute SML statistics")
        pooled_mean = self.total.sum() / self.count.sum()
        pooled_std = np.sqrt(max(self.total_sq.sum() / self.count.sum() - pooled_mean ** 2, 0.0))
        ok = self.count >= MIN_PIXELS
        counts = np.maximum(self.count, 1.0)
        mean = np.where(ok, self.total / counts, pooled_mean)
        var = np.where(ok, self.total_sq / counts - (self.total / counts) ** 2, pooled_std ** 2)
        std = np.sqrt(np.maximum(var, 0.0))
        std = np.maximum(std, 1e-6)  # a constant class would divide by zero
        return mean, std, [int(c) for c in np.flatnonzero(~ok)]


def save_stats(path: str | os.PathLike[str], mean: np.ndarray, std: np.ndarray, meta: dict) -> None:
    """Write ``{"mean": [...], "std": [...], **meta}`` atomically."""
    atomic_write_json(path, {"mean": [float(v) for v in mean], "std": [float(v) for v in std], **meta})


def load_stats(path: str | os.PathLike[str], num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """Read per-class mean and std (``num_classes`` each) written by ``python -m mgcda_core.sml_stats``."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"SML statistics not found: {path}; compute them with "
                                f"python -m mgcda_core.sml_stats --images DIR --out {path}")
    try:
        data = json.loads(path.read_text())
        mean, std = np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32)
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not an SML statistics file (expected JSON with 'mean' and 'std'): {error}") from error
    if mean.shape != (num_classes,) or std.shape != (num_classes,) or not np.all(std > 0) or not np.all(np.isfinite(mean)):
        raise DataError(f"{path}: expected {num_classes} finite means and positive stds, got shapes "
                        f"{mean.shape}/{std.shape}")
    return torch.from_numpy(mean), torch.from_numpy(std)
