"""Reading torch weight files safely: weights-only unpickling, one-line refusals, finite values only.

``torch.load(weights_only=True)`` refuses pickled Python objects (they could run code) with a long message that
suggests ``weights_only=False``; here the refusal is one line that suggests nothing unsafe. Weights holding NaN
or infinity are refused naming the tensor: such a network scores every pixel NaN, which thresholding turns
into "no anomaly anywhere". :func:`load_exact` is the one strict state-dict loader of the package (checkpoints,
segmentation plug-ins, perceptual and resynthesis networks).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgcda_core.errors import MgcdaError, MissingInputError, ModelError, shorten

# How torch's weights-only unpickler names a Python object it refuses to build (torch/_weights_only_unpickler.py).
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
LISTED_KEYS = 5  # how many differing keys a refusal names per kind


def load_weights_only(path: str | os.PathLike[str], what: str, map_location: str | torch.device = "cpu",
                      error: type[MgcdaError] = ModelError) -> Any:
    """``torch.load(path, weights_only=True)``; a missing, foreign, truncated or pickled-code file raises
    ``error`` (or :class:`MissingInputError`) in one line naming ``path`` and ``what`` was expected."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _UNSAFE_GLOBAL.search(str(err))
        if unsafe:
            raise error(f"{path}: refused: the file holds the Python object {shorten(unsafe.group(1))}, which "
                        f"loading would execute; a {what} holds only tensors and plain values") from None
        raise error(f"{path}: not a readable {what} (not a torch file, or damaged)") from None
    except Exception as err:  # torch raises several types (RuntimeError, EOFError, ...) for corrupt files
        raise error(f"{path}: not a readable {what} ({type(err).__name__}: {shorten(str(err))})") from None


def check_finite(state: Mapping[str, Any], source: str, error: type[MgcdaError] = ModelError) -> None:
    """Refuse a state dict with a NaN or infinite value in any floating-point tensor, naming the first one."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise error(f"{source}: tensor {key!r} holds {bad} NaN or infinite value(s) of {value.numel()}; "
                                 "the weights are unusable (a diverged or damaged training run)")


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def state_dict_differences(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any],
                           shown: int = LISTED_KEYS) -> list[str]:
    """What keeps ``found`` from loading strictly into a module whose state dict is ``expected``: one entry per
    kind (missing keys, unexpected keys, shape mismatches), each with its count and its first ``shown`` keys."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [f"{key}: file {_shape(found[key])} vs model {tuple(value.shape)}" for key, value in expected.items()
              if key in found and _shape(found[key]) != tuple(value.shape)]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:shown])}{more}")
    return problems


def load_exact(module: nn.Module, state: Mapping[str, Any], source: str, described_as: str | None = None,
               shown: int = LISTED_KEYS) -> None:
    """Load ``state`` into ``module`` requiring exactly the same keys and shapes and finite values.

    Otherwise raises :class:`ModelError` naming ``source`` and what the weights were meant for (``described_as``,
    default the module's class name) and listing the differences (:func:`state_dict_differences`), so a wrong
    width or architecture is refused instead of partly loaded.
    """
    problems = state_dict_differences(module.state_dict(), state, shown)
    if problems:
        raise ModelError(f"{source}: weights do not fit {described_as or type(module).__name__}: "
                         f"{'; '.join(problems)}")
    check_finite(state, source)
    module.load_state_dict(state, strict=True)
