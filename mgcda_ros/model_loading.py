"""Builds the detector the node, replay and demo run, from the node's parameters (one code path for all three)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mgcda_ros.params import NodeParams


class ModelLoadError(RuntimeError):
    """The model file named by ``model_path`` is missing or unusable; the message names it."""


def load_detector(params: NodeParams) -> Any:
    """``Detector.default`` (embedded weights) when ``model_path`` is empty, else the trained model it names."""
    from mgcda_core.pipeline.detector import Detector

    kwargs: dict[str, Any] = {"score": params.score, "input_size": (params.input_height, params.input_width),
                              "device": params.device}
    if not params.model_path:
        return Detector.default(**kwargs)
    path = Path(params.model_path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (parameter model_path)")
    try:
        return Detector.from_checkpoint(path, **kwargs)
    except Exception as err:  # any failure to read the file is reported once, naming it
        raise ModelLoadError(f"cannot load model file {path}: {type(err).__name__}: {err}") from None
