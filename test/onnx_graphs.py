"""Small ONNX graphs built in the tests (onnx.helper), standing in for exported models: the node's score graph
contract (input ``image`` float32 1 x 3 x H x W, output float32 1 x 1 x H x W) kept or broken on purpose."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OPSET = 17


def score_graph(height: int, width: int, *, input_name: str = "image", channels_out: int = 1,
                nan_where_black: bool = False) -> onnx.ModelProto:
    """Score = mean of the RGB channels (1 x 1 x H x W), repeated to ``channels_out`` channels. With
    ``nan_where_black`` the score is mean / mean instead: 1 on every pixel, and NaN (0 / 0) where the network
    input is black."""
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, height, width])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, channels_out, height, width])
    repeats = helper.make_tensor("repeats", TensorProto.INT64, [4], [1, channels_out, 1, 1])
    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1], keepdims=1)]
    if nan_where_black:
        nodes.append(helper.make_node("Div", ["mean", "mean"], ["ratio"]))
    nodes.append(helper.make_node("Tile", ["ratio" if nan_where_black else "mean", "repeats"], ["score"]))
    graph = helper.make_graph(nodes, "stand_in_score", [image], [score], initializer=[repeats])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def write_graph(model: onnx.ModelProto, path: Path, record: dict | None = None) -> Path:
    """Save ``model`` at ``path``; with ``record``, also an export record ``<path>.json`` like the exporter's,
    carrying the file's sha256 unless ``record`` sets ``onnx_sha256`` itself."""
    data = model.SerializeToString()
    path.write_bytes(data)
    if record is not None:
        full = {"format": 1, "onnx_sha256": hashlib.sha256(data).hexdigest(), **record}
        path.with_name(path.name + ".json").write_text(json.dumps(full))
    return path
