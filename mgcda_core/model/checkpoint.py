"""Inference checkpoint format of the dissimilarity network (docs/ARCHITECTURE.md).

A checkpoint is ``{"format": "mgcda", "version": 1, "architecture": {constructor kwargs}, "model": state_dict,
**extra}`` written atomically with ``torch.save`` and read with ``torch.load(weights_only=True)``. Training
checkpoints add keys (optimiser, scheduler, …) through ``extra``, so they are valid inference checkpoints too.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from mgcda_core.constants import MAX_MODEL_WIDTH
from mgcda_core.errors import ModelError, WeightsUnavailableError, shorten
from mgcda_core.model.dissimilarity import MAX_FIRST_LEVEL, DissimNetPrior
from mgcda_core.model.encoder_weights import EncoderWeights
from mgcda_core.model.encoders import ENCODERS, build_encoder
from mgcda_core.model.weights_file import check_finite, load_exact, load_weights_only
from mgcda_core.utils.atomic import atomic_write_with

FORMAT = "mgcda"
VERSION = 1
RESERVED_KEYS = ("format", "version", "architecture", "model")
ARCHITECTURE_KEYS = ("encoder", "width", "num_classes", "use_prior", "use_correlation")
# Keys added later, with the value that reproduces a checkpoint written before them.
OPTIONAL_ARCHITECTURE_KEYS = {"decoder_width": None, "first_level": 0, "freeze_encoder": False}
# Bounds of the architecture fields, checked before a network is built (see MAX_MODEL_WIDTH).
MAX_WIDTH = MAX_MODEL_WIDTH
MAX_NUM_CLASSES = 1000


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
    """Load and validate an mgcda checkpoint (``weights_only=True``): top level, architecture fields and finite
    weights; returns the whole dict."""
    payload = load_weights_only(path, "mgcda checkpoint", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelError(f"{path} is not an mgcda checkpoint: expected format {FORMAT!r}, found {shorten(found)}")
    if payload.get("version") != VERSION:
        raise ModelError(f"{path} has checkpoint version {shorten(payload.get('version'))}, this code reads {VERSION}")
    architecture = payload.get("architecture")
    if (not isinstance(architecture, dict) or not set(ARCHITECTURE_KEYS) <= set(architecture)
            or not set(architecture) <= {*ARCHITECTURE_KEYS, *OPTIONAL_ARCHITECTURE_KEYS}):
        raise ModelError(f"{path}: 'architecture' must be a dict with keys {list(ARCHITECTURE_KEYS)} and optionally "
                         f"{list(OPTIONAL_ARCHITECTURE_KEYS)}, got {shorten(architecture)}")
    payload["architecture"] = {**OPTIONAL_ARCHITECTURE_KEYS, **architecture}
    if payload["architecture"]["decoder_width"] is None:
        payload["architecture"]["decoder_width"] = architecture["width"]
    check_architecture(payload["architecture"], str(path))
    if not isinstance(payload.get("model"), dict):
        raise ModelError(f"{path}: 'model' must be a state dict, got {type(payload.get('model')).__name__}")
    check_finite(payload["model"], str(path))
    return payload


def check_architecture(architecture: dict[str, Any], source: str) -> None:
    """Refuse architecture fields of the wrong type or outside sane bounds, naming the field."""
    def refuse(key: str, expected: str) -> None:
        raise ModelError(f"{source}: architecture field {key!r} must be {expected}, got {shorten(architecture[key])}")

    if architecture["encoder"] not in ENCODERS:
        refuse("encoder", f"one of {', '.join(ENCODERS)}")
    for key in ("width", "decoder_width"):
        value = architecture[key]
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not 0 < value <= MAX_WIDTH):
            refuse(key, f"a number in (0, {MAX_WIDTH:g}]")
    value = architecture["num_classes"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NUM_CLASSES:
        refuse("num_classes", f"an integer in 1..{MAX_NUM_CLASSES}")
    value = architecture["first_level"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FIRST_LEVEL:
        refuse("first_level", f"an integer in 0..{MAX_FIRST_LEVEL}")
    for key in ("use_prior", "use_correlation", "freeze_encoder"):
        if not isinstance(architecture[key], bool):
            refuse(key, "true or false")


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
            raise ModelError(f"{path} holds another architecture: {'; '.join(diffs)}")
    try:
        model = DissimNetPrior(**saved)
    except ValueError as error:  # e.g. a width too small for the encoder
        raise ModelError(f"{path}: architecture {saved} cannot be built: {error}") from None
    load_exact(model, payload["model"], str(path), f"architecture {saved}")
    restore_frozen_encoder(model)
    return model.to(map_location)


def restore_frozen_encoder(model: DissimNetPrior) -> bool:
    """Give a frozen encoder stored in float16 its float32 ImageNet tensors back; True when it did.

    A frozen encoder holds ImageNet's weights and statistics by construction, and the shipped file stores them
    rounded to float16 for size. When every encoder tensor is exactly the float16 rounding of the same tensor of
    the encoder's default ImageNet weights, the float32 originals are loaded: the network then computes what it
    computed in training, and the inference graph can run the backbone once for it and the perceptual
    difference. Anything else (a trained or other encoder, weights not installed) is left as stored.
    """
    if not model.freeze_encoder:
        return False
    architecture = model.architecture
    try:
        weights = EncoderWeights.default_for(architecture["encoder"])
        reference = build_encoder(architecture["encoder"], architecture["width"], weights=weights).state_dict()
    except (KeyError, ValueError, WeightsUnavailableError):
        return False
    stored = model.encoder.state_dict()
    rounded = stored.keys() == reference.keys() and all(
        torch.equal(value, reference[key].half().to(value.dtype)) if value.is_floating_point()
        else torch.equal(value, reference[key]) for key, value in stored.items())
    if rounded:
        model.encoder.load_state_dict(reference)
    return rounded
