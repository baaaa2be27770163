"""The one check that a model's score map is usable: NaN or infinite scores never become "no anomaly".

Thresholding a NaN score gives "normal" (every comparison with NaN is false), so a damaged model would report an
all-clear. The node, replay and the metric accumulator refuse such a map through :func:`require_finite_score`.
"""

from __future__ import annotations

import numpy as np

from mgcda_core.errors import ModelError


def count_non_finite(array: np.ndarray) -> int:
    """How many elements of ``array`` are NaN or infinite (0 for an integer array)."""
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def require_finite_score(score: np.ndarray, what: str) -> None:
    """Refuse (ModelError) a score map holding NaN or infinite values; the message starts with ``what`` (the
    frame) and names how many of the map's values are non-finite."""
    bad = count_non_finite(score)
    if bad:
        raise ModelError(f"{what}: the model produced a score map with {bad} NaN or infinite values of "
                         f"{score.size}; refusing to score it (are the weights damaged?)")
