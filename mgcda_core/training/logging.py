"""TensorBoard scalar logging (rank 0 only) under ``<out_dir>/tensorboard``.

Tags: ``loss/<term>`` for every loss term, ``mdat/tau``, ``mdat/acc_<f|o>_<v|a>`` and ``…_anomaly`` (domain
classifier accuracy per domain, on all and on anomaly pixels), ``mdat/gap_<f|o>`` and ``…_anomaly`` (mean P_V −
mean P_A), ``lr/network``, ``lr/classifiers``, ``cacl/<V|A>/<anchors|positives|negatives>`` (counts drawn) and
``cacl/<V|A>/<anchor_fill|positive_fill>`` (fraction of the requested set filled).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

TENSORBOARD_DIR = "tensorboard"


class ScalarLogger:
    """Writes scalars to TensorBoard when ``enabled`` (rank 0); a resumed run purges events after ``start_step``."""

    def __init__(self, out_dir: str | os.PathLike[str], enabled: bool, start_step: int = 0) -> None:
        self.log_dir = Path(out_dir) / TENSORBOARD_DIR
        # purge_step drops events a killed run logged after its last checkpoint, so curves do not fold back.
        self._writer = SummaryWriter(str(self.log_dir), purge_step=start_step or None) if enabled else None

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
