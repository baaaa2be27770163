"""Builds the detector the node, replay and demo run, from the node's parameters (one code path for all three).

The inference graph (embedded ESPNetv2 front half, plus the trained dissimilarity network of an mgcda checkpoint)
or an exported ``.onnx``/``.engine`` file runs on the runtime named by ``backend`` (``mgcda_core.runtime``'s
``make_runtime``; ``auto`` picks the fastest available).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mgcda_core.errors import MgcdaError, shorten
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
    options = RuntimeOptions(precision=params.precision, input_size=size, engine_cache_dir=params.engine_cache(),
                             frames_in_flight=params.frames_in_flight)
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
            _check_graph_io(path, size)
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
        record = json.loads(sidecar.read_text())
        description = record.get("description", {})
        recorded = record["onnx_sha256"]
    except (OSError, ValueError, AttributeError, KeyError) as err:
        raise ModelLoadError(f"model file {path}: its export record {sidecar.name} is unreadable "
                             f"({type(err).__name__}: {shorten(str(err))})") from None
    actual = _sha256(path)
    if recorded != actual:
        raise ModelLoadError(f"model file {path} (sha256 {actual}) does not match its export record {sidecar} "
                             f"(onnx_sha256 {shorten(recorded)}): the two come from different exports; export "
                             "the model again")
    stages = description.get("stages", "score")
    if stages != "score":
        raise ModelLoadError(f"model file {path} was exported with --stages {stages} (per {sidecar.name}): the node "
                             "needs the full graph; export it again with --stages score")
    exported = description.get("score")
    if exported is not None and exported != score:
        raise ModelLoadError(f"model file {path} computes the {exported!r} score (per {sidecar.name}) but parameter "
                             f"score is {score!r}; set score: {exported} or export the model with --score {score}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_graph_io(path: Path, size: tuple[int, int]) -> None:
    """Refuse an ONNX graph that is not the score graph the node runs (one float32 N x 3 x H x W input ``image``,
    one float32 N x 1 x H x W output, H x W the network input size where fixed): another graph would start
    "ready" and then fail every frame."""
    import onnx  # here: needed only for an ONNX model_path

    from mgcda_core.graph_io import check_score_io

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise ModelLoadError(f"model file {path} is not a readable ONNX graph ({_one_line(err, path)})") from None
    try:
        check_score_io(model, size)
    except ValueError as err:
        raise ModelLoadError(f"model file {path} is not a graph the node can run: {_detail(err, path)} "
                             f"(input_height x input_width = {size[0]} x {size[1]})") from None


def _detail(err: Exception, path: Path | None, limit: int = 400) -> str:
    """``err``'s message on one line, at most ``limit`` characters, naming ``path`` as "the file"."""
    text = str(err) if path is None else str(err).replace(str(path), "the file")
    detail = " ".join(text.split())
    return detail if len(detail) <= limit else detail[: limit - 3] + "..."


def _one_line(err: Exception, path: Path | None) -> str:
    return f"{type(err).__name__}: {_detail(err, path)}"
