"""Builds the detector the node, replay and demo run, from the node's parameters (one code path for all three)."""

from __future__ import annotations

from pathlib import Path

from mgcda_core.pipeline.detector import Detector
from mgcda_ros.params import NodeParams

#: model files the torch runtime reads (mgcda checkpoints); ONNX graphs and engines need their runtimes.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


class ModelLoadError(RuntimeError):
    """The model file named by ``model_path`` is missing or unusable; the message names it."""


def load_detector(params: NodeParams) -> Detector:
    """``Detector.default`` (embedded weights) when ``model_path`` is empty, else the trained model it names."""
    size = (params.input_height, params.input_width)
    if params.backend not in ("auto", "torch"):
        raise ModelLoadError(f"backend {params.backend!r} is not available in this build: use backend 'torch' or "
                             "'auto' with an mgcda checkpoint")
    if not params.model_path:
        try:
            return Detector.default(score=params.score, input_size=size, device=params.device)
        except Exception as err:  # e.g. CUDA requested but absent, SML statistics missing
            raise ModelLoadError(f"cannot build the embedded default detector: {type(err).__name__}: {err}") from None
    path = Path(params.model_path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path} (parameter model_path)")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise ModelLoadError(f"model file {path}: expected an mgcda checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) for "
                             f"backend {params.backend!r}")
    try:
        return Detector.from_checkpoint(path, score=params.score, input_size=size, device=params.device)
    except Exception as err:  # any failure to read the file is reported once, on one line, naming it once
        raise ModelLoadError(f"cannot load model file {path}: {_one_line(err, path)}") from None


def _one_line(err: Exception, path: Path, limit: int = 400) -> str:
    detail = " ".join(str(err).replace(str(path), "the file").split())
    detail = detail if len(detail) <= limit else detail[: limit - 3] + "..."
    return f"{type(err).__name__}: {detail}"
