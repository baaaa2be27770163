"""Training checkpoints: the inference checkpoint of ``mgcda_core.model.checkpoint`` plus a ``training`` entry.

``save_model(path, model, extra={"training": state, "config": config})`` writes the file atomically (temporary
file + rename), so a run killed mid-write leaves the previous ``latest.pt`` intact and at most a stray
``.latest.pt.*.tmp`` that resuming ignores. The ``training`` entry holds the domain classifiers, projector,
optimisers, schedulers, AMP scaler, step, epoch, τ and RNG states; the data order needs no state (it is a
function of seed and epoch, see ``mgcda_core.data.layout``). Everything is plain tensors and containers, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgcda_core.errors import MgcdaError
from mgcda_core.model.checkpoint import save_model
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.weights_file import check_finite, load_weights_only

CHECKPOINT_DIR = "checkpoints"
LATEST_NAME = "latest.pt"
TRAINING_KEY = "training"
CONFIG_KEY = "config"


class CheckpointError(MgcdaError, RuntimeError):
    """A checkpoint to resume from is missing, not a training checkpoint, or does not fit this run's config or
    process count; the message names the file and what differs."""


def latest_path(out_dir: str | os.PathLike[str]) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / LATEST_NAME


def numbered_path(out_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / f"step_{step:08d}.pt"


def existing_checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint files (``*.pt``) a previous run left in ``out_dir``, sorted by name."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    return sorted(folder.glob("*.pt")) if folder.is_dir() else []


def remove_checkpoints(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def save_training_checkpoint(path: str | os.PathLike[str], model: DissimNetPrior, training: dict[str, Any],
                             config: dict[str, Any]) -> None:
    """Write an inference-compatible checkpoint with the training state, atomically."""
    save_model(path, model, extra={TRAINING_KEY: training, CONFIG_KEY: config})


def load_training_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_training_checkpoint`` (weights only); refuse anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    payload = load_weights_only(path, "training checkpoint", map_location, error=CheckpointError)
    if not isinstance(payload, dict) or TRAINING_KEY not in payload or "model" not in payload:
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a training checkpoint (expected keys 'model' and '{TRAINING_KEY}', "
                              f"found {keys})")
    check_finite(payload["model"], str(path), error=CheckpointError)
    return payload


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy (global), torch CPU and CUDA generator states as weights-only-loadable values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
        "has_gauss": numpy_state["has_gauss"],
        "gauss": numpy_state["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    # random.setstate needs tuples; a round trip through some serialisers yields lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
