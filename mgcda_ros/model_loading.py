"""Builds the detector the node, replay and demo run, from the node's parameters (one code path for all three).

The inference graph (embedded ESPNetv2 front half, plus the trained dissimilarity network of an mgcda checkpoint)
or an exported ``.onnx``/``.engine`` file runs on the runtime named by ``backend`` (``mgcda_core.runtime``'s
``make_runtime``; ``auto`` picks the fastest available).
"""

from __future__ import annotations

import json
from pathlib import Path

from mgcda_core.errors import MgcdaError
from mgcda_core.pipeline.detector import Detector, build_graph, weights_info
from mgcda_core.runtime.factory import RuntimeOptions, make_runtime
from mgcda_ros.params import NodeParams

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
EXPORTED_SUFFIXES = (".onnx", ".engine", ".plan", ".trt")


class ModelLoadError(MgcdaError, RuntimeError):
    """The model file named by ``model_path`` is missing or unusable; the message names it."""


def load_detector(params: NodeParams) -> Detector:
    """Embedded default when ``model_path`` is empty, else the checkpoint or exported graph it names."""
    size = (params.input_height, params.input_width)
    # the node's own cache folder, always passed: the runtime factory's default is a different folder
    options = RuntimeOptions(precision=params.precision, input_size=size, engine_cache_dir=params.engine_cache())
    device = resolve_device(params.device)
    path = Path(params.model_path).expanduser() if params.model_path else None
    if path is not None:
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path} (parameter model_path)")
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES + EXPORTED_SUFFIXES:
            raise ModelLoadError(f"model file {path}: expected an mgcda checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) "
                                 f"or an exported graph ({', '.join(EXPORTED_SUFFIXES)})")
        if path.suffix.lower() == ".onnx":
            _check_export_description(path, params.score)
    try:
        if path is not None and path.suffix.lower() in EXPORTED_SUFFIXES:
            # an exported graph already computes its score: `score` must name the one it was exported with
            runtime = make_runtime(params.backend, path, device, options)
            return Detector(runtime, params.score, size, info={"model": path.name})
        graph = build_graph(params.score, path)
        runtime = make_runtime(params.backend, graph, device, options)
        return Detector(runtime, params.score, size, info=weights_info(graph, path))
    except Exception as err:  # reported once, on one line, naming the file once
        what = f"model file {path}" if path is not None else "the embedded default detector"
        raise ModelLoadError(f"cannot load {what}: {_one_line(err, path)}") from None


def resolve_device(device: str) -> str:
    """``auto`` -> "cuda" when PyTorch sees a CUDA GPU, else "cpu"; any other value as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_export_description(path: Path, score: str) -> None:
    """An exported graph computes one score: refuse a ``score`` parameter that differs from the one its export
    sidecar (``<file>.json``, written by ``python -m mgcda_core.export``) records, or a graph exported without
    its score stage. Without a sidecar there is nothing to check against."""
    from mgcda_core.export.onnx_export import sidecar_path  # here: the exporter pulls in onnx, needed only now

    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    try:
        description = json.loads(sidecar.read_text()).get("description", {})
    except (OSError, ValueError, AttributeError) as err:
        raise ModelLoadError(f"model file {path}: its export record {sidecar.name} is unreadable "
                             f"({type(err).__name__}: {err})") from None
    stages = description.get("stages", "score")
    if stages != "score":
        raise ModelLoadError(f"model file {path} was exported with --stages {stages} (per {sidecar.name}): the node "
                             "needs the full graph; export it again with --stages score")
    exported = description.get("score")
    if exported is not None and exported != score:
        raise ModelLoadError(f"model file {path} computes the {exported!r} score (per {sidecar.name}) but parameter "
                             f"score is {score!r}; set score: {exported} or export the model with --score {score}")


def _one_line(err: Exception, path: Path | None, limit: int = 400) -> str:
    text = str(err) if path is None else str(err).replace(str(path), "the file")
    detail = " ".join(text.split())
    detail = detail if len(detail) <= limit else detail[: limit - 3] + "..."
    return f"{type(err).__name__}: {detail}"
