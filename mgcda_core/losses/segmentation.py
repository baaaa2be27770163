"""Pixel cross-entropy L_CE of MGCDA / Synboost with ENet class weights.

Labels are {0 normal, 1 anomaly, 255 ignore}. Class weights follow the ENet rule w_k = 1 / ln(1.02 + p_k),
p_k the frequency of class k among the labelled (non-255) pixels of the training set, as Synboost computes
them from its label folder; its fallback constants are kept below.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from mgcda_core.constants import IGNORE_INDEX
from mgcda_core.errors import DataError, MissingInputError
from mgcda_core.utils.images import read_label

__all__ = [
    "ENET_C",
    "SYNBOOST_CLASS_WEIGHTS",
    "SYNBOOST_CLASS_WEIGHTS_WITH_VOID",
    "enet_class_weights",
    "label_pixel_counts",
    "label_folder_pixel_counts",
    "weighted_cross_entropy",
]

ENET_C = 1.02  # ENet's constant; bounds every weight by 1 / ln(1.02) ~ 50.5
# Synboost's fallback weights for classes [0 normal, 1 anomaly] when it does not scan the label folder,
# for labels without void (our VoidClass/AnomalyMix labels) and with void counted as anomaly.
SYNBOOST_CLASS_WEIGHTS = (1.46494611, 16.5204619)
SYNBOOST_CLASS_WEIGHTS_WITH_VOID = (1.54843156, 8.03912212)

LABEL_SUFFIXES = (".png",)


def enet_class_weights(pixel_counts: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """ENet class weights w_k = 1 / ln(1.02 + p_k), p_k = n_k / sum_j n_j, as a float32 tensor.

    ``pixel_counts``: number of labelled pixels per class (ignore pixels already excluded), non-negative,
    at least one class and a positive total. A class with no pixels gets the largest weight 1 / ln(1.02).
    """
    counts = torch.as_tensor(np.asarray(pixel_counts) if not isinstance(pixel_counts, Tensor) else pixel_counts)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"pixel_counts must be a non-empty 1-D sequence of per-class counts, got shape {tuple(counts.shape)}")
    if counts.is_complex() or counts.dtype == torch.bool:
        raise TypeError(f"pixel_counts must be numbers, got dtype {counts.dtype}")
    counts = counts.double()
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError(f"pixel_counts must be finite and non-negative, got {counts.tolist()}")
    total = counts.sum()
    if total <= 0:
        raise ValueError("pixel_counts sum to 0: no labelled pixels to compute class frequencies from")
    return (1.0 / torch.log(ENET_C + counts / total)).float()


def _count_one(labels: np.ndarray | Tensor, num_classes: int, where: str) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.size == 0:
        raise ValueError(f"{where}: empty label array")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: labels must be integer class ids, got dtype {array.dtype}")
    if array.min() < 0 or array.max() > IGNORE_INDEX:
        raise ValueError(f"{where}: label values must lie in [0, {num_classes - 1}] or be {IGNORE_INDEX}, "
                         f"got range [{array.min()}, {array.max()}]")
    histogram = np.bincount(array.reshape(-1), minlength=IGNORE_INDEX + 1)
    stray = np.flatnonzero(histogram[num_classes:IGNORE_INDEX])
    if stray.size:
        raise ValueError(f"{where}: label values must be in [0, {num_classes - 1}] or {IGNORE_INDEX}, "
                         f"found {(stray + num_classes).tolist()[:10]}")
    return histogram[:num_classes].astype(np.int64)


def label_pixel_counts(labels: np.ndarray | Tensor | Iterable[np.ndarray | Tensor], num_classes: int = 2) -> np.ndarray:
    """Per-class pixel counts (int64, length ``num_classes``) of one label array or an iterable of them.

    Ignore (255) pixels are excluded; any other value outside [0, num_classes) is an error.
    """
    if num_classes < 1 or num_classes > IGNORE_INDEX:
        raise ValueError(f"num_classes must lie in [1, {IGNORE_INDEX}], got {num_classes}")
    if isinstance(labels, (np.ndarray, Tensor)):
        return _count_one(labels, num_classes, "labels")
    total = np.zeros(num_classes, dtype=np.int64)
    seen = 0
    for index, array in enumerate(labels):
        total += _count_one(array, num_classes, f"labels[{index}]")
        seen += 1
    if seen == 0:
        raise ValueError("labels is an empty iterable: no label arrays to count")
    return total


def label_folder_pixel_counts(
    folder: str | os.PathLike[str], num_classes: int = 2, progress: bool = True
) -> np.ndarray:
    """Per-class pixel counts over every PNG label image in ``folder`` (a tqdm bar shows the scan)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"label folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES)
    if not files:
        raise DataError(f"label folder {folder} holds no {'/'.join(LABEL_SUFFIXES)} label images")
    total = np.zeros(num_classes, dtype=np.int64)
    for path in tqdm(files, desc="class pixel counts", unit="img", disable=not progress):
        try:
            total += _count_one(read_label(path), num_classes, str(path))
        except DataError:
            raise
        except ValueError as error:  # values out of range: a data error of that file (named in the message)
            raise DataError(str(error)) from None
    return total


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weights: Tensor | Sequence[float] | None) -> Tensor:
    """Class-weighted pixel cross-entropy L_CE, ignoring label 255.

    logits: B x K x H x W; labels: B x H x W integer in [0, K) or 255; weights: K class weights (or None for
    unweighted). Reduction is PyTorch's weighted mean, sum_i w_{y_i} l_i / sum_i w_{y_i} over labelled pixels,
    as Synboost's ``nn.CrossEntropyLoss(weight=..., ignore_index=255)``. A batch with no labelled pixel gives
    0 (connected to ``logits``) instead of PyTorch's NaN, so one fully ignored batch cannot poison training.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 4 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating B x K x H x W tensor, got {getattr(logits, 'shape', type(logits))!r}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels).__name__)}")
    batch, classes, height, width = logits.shape
    if labels.shape != (batch, height, width):
        raise ValueError(f"labels must be B x H x W = {(batch, height, width)} to match logits, got {tuple(labels.shape)}")
    if logits.numel() == 0:
        raise ValueError(f"logits are empty (shape {tuple(logits.shape)})")
    labels = labels.long()
    invalid = ((labels < 0) | (labels >= classes)) & (labels != IGNORE_INDEX)
    if bool(invalid.any()):
        raise ValueError(f"labels must lie in [0, {classes - 1}] or be {IGNORE_INDEX}; found {torch.unique(labels[invalid])[:10].tolist()}")
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
        if weights.shape != (classes,):
            raise ValueError(f"weights must hold one value per class ({classes}), got shape {tuple(weights.shape)}")
        if not bool(torch.isfinite(weights).all()) or bool((weights <= 0).any()):
            raise ValueError(f"class weights must be finite and positive, got {weights.tolist()}")
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, weight=weights, ignore_index=IGNORE_INDEX)
