"""``metrics.json``: the one output format of every evaluation (``mgcda_core.evaluate``, ``mgcda_ros.replay``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mgcda_core.utils.atomic import atomic_write_json

METRICS_FILE = "metrics.json"
REQUIRED_KEYS = ("AP", "FPR95", "AUROC", "num_images", "num_pixels", "protocol")


def _json_ready(value: Any) -> Any:
    """numpy scalars/arrays to Python; non-finite floats (e.g. a -inf threshold) to None (JSON has no inf)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics(out_dir: str | os.PathLike[str], result: dict, extra: dict | None = None) -> Path:
    """Write ``result`` (from ``MetricAccumulator.result()``) merged with ``extra`` (score name, model, data
    set, timing...) to ``out_dir/metrics.json`` atomically; returns the path.

    Refuses a result without AP, FPR95, AUROC (fractions in [0, 1]), num_images, num_pixels or protocol, and
    ``extra`` keys that would overwrite a metric.
    """
    missing = [key for key in REQUIRED_KEYS if key not in result]
    if missing:
        raise ValueError(f"metrics result lacks {missing}; expected at least {list(REQUIRED_KEYS)}")
    for key in ("AP", "FPR95", "AUROC"):
        value = float(result[key])
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{key} = {value} is not a fraction in [0, 1]")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(result))
    if clash:
        raise ValueError(f"extra fields {clash} would overwrite metric fields of the same name")
    path = Path(out_dir) / METRICS_FILE
    atomic_write_json(path, _json_ready({**result, **extra}))
    return path
