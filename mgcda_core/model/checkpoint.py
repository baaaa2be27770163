"""Inference checkpoint format of the dissimilarity network (docs/ARCHITECTURE.md).

A checkpoint is ``{"format": "mgcda", "version": 1, "architecture": {constructor kwargs}, "model": state_dict,
**extra}`` written atomically with ``torch.save`` and read with ``torch.load(weights_only=True)``. Training
checkpoints add keys (optimiser, scheduler, …) through ``extra``, so they are valid inference checkpoints too.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.utils.atomic import atomic_write_with

FORMAT = "mgcda"
VERSION = 1
RESERVED_KEYS = ("format", "version", "architecture", "model")
ARCHITECTURE_KEYS = ("encoder", "width", "num_classes", "use_prior", "use_correlation")
# Keys added later, with the value that reproduces a checkpoint written before them.
OPTIONAL_ARCHITECTURE_KEYS = {"decoder_width": None, "first_level": 0, "freeze_encoder": False}
_LISTED = 5  # how many differing keys an error message names


def save_model(path: str | os.PathLike[str], model: DissimNetPrior, extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (and ``extra`` top-level entries) to ``path`` atomically."""
    if not isinstance(model, DissimNetPrior):
        raise TypeError(f"save_model expects a DissimNetPrior (unwrap DDP/compile wrappers first), "
                        f"got {type(model).__name__}")
    extra = dict(extra or {})
    clashes = sorted(set(extra) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f"extra may not contain the reserved checkpoint keys {clashes}")
    payload = {"format": FORMAT, "version": VERSION, "architecture": dict(model.architecture),
               "model": model.state_dict(), **extra}
    atomic_write_with(path, lambda handle: torch.save(payload, handle))


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate the top level of an mgcda checkpoint (``weights_only=True``); returns the whole dict."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # pickle/zip errors of a foreign or truncated file
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not an mgcda checkpoint: expected format {FORMAT!r}, found {found!r}")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} has checkpoint version {payload.get('version')!r}, this code reads {VERSION}")
    architecture = payload.get("architecture")
    if (not isinstance(architecture, dict) or not set(ARCHITECTURE_KEYS) <= set(architecture)
            or not set(architecture) <= {*ARCHITECTURE_KEYS, *OPTIONAL_ARCHITECTURE_KEYS}):
        raise ValueError(f"{path}: 'architecture' must be a dict with keys {list(ARCHITECTURE_KEYS)} and optionally "
                         f"{list(OPTIONAL_ARCHITECTURE_KEYS)}, got {architecture!r}")
    payload["architecture"] = {**OPTIONAL_ARCHITECTURE_KEYS, **architecture}
    if payload["architecture"]["decoder_width"] is None:
        payload["architecture"]["decoder_width"] = architecture["width"]
    if not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: 'model' must be a state dict, got {type(payload.get('model')).__name__}")
    return payload


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _state_dict_differences(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> list[str]:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: checkpoint {_shape(found[k])} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in found and _shape(found[k]) != tuple(v.shape)]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}")
    return problems


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
               architecture: dict[str, Any] | None = None) -> DissimNetPrior:
    """Rebuild the saved ``DissimNetPrior`` (never downloads weights) and load its state dict strictly.

    ``architecture``, when given, is what the caller expects; any differing entry is refused by name.
    """
    payload = read_checkpoint(path, map_location)
    saved = payload["architecture"]
    if architecture is not None:
        diffs = [f"{k}: checkpoint {saved.get(k)!r} vs expected {v!r}" for k, v in architecture.items()
                 if saved.get(k) != v]
        if diffs:
            raise ValueError(f"{path} holds another architecture: {'; '.join(diffs)}")
    model = DissimNetPrior(**saved, pretrained=False)
    problems = _state_dict_differences(model.state_dict(), payload["model"])
    if problems:
        raise ValueError(f"{path}: weights do not fit architecture {saved}: {'; '.join(problems)}")
    model.load_state_dict(payload["model"], strict=True)
    return model.to(map_location)
