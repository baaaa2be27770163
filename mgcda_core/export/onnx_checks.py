"""Static checks of an ONNX model: TensorRT operator support and parameter count (the input/output contract is
``mgcda_core.graph_io``).

The operator list is the TensorRT ONNX parser's own support matrix (``tensorrt_supported_ops.txt``, header names
its source and version); the few per-operator restrictions our graphs can hit are checked here as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

SUPPORTED_OPS_FILE = Path(__file__).with_name("tensorrt_supported_ops.txt")

# Restrictions from the same support matrix (docs/operators.md, Resize and TopK rows).
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDINATE_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
TOPK_MAX_K = 3840


@dataclass(frozen=True)
class SupportedOps:
    """The TensorRT ONNX parser's supported operators (default ONNX domain) and opset range."""

    ops: frozenset[str]
    tensorrt_version: str
    opset_min: int
    opset_max: int


def load_supported_ops(path: str | Path = SUPPORTED_OPS_FILE) -> SupportedOps:
    """Parse the operator list: ``# key: value`` header lines, then one operator per line."""
    header: dict[str, str] = {}
    ops: set[str] = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() in ("tensorrt_version", "opset_min", "opset_max"):
                header[key.strip()] = value.strip()
        elif line:
            ops.add(line)
    missing = {"tensorrt_version", "opset_min", "opset_max"} - set(header)
    if missing or not ops:
        raise ValueError(f"{path}: malformed supported-operator list "
                         f"(missing header {sorted(missing)} or no operators)")
    return SupportedOps(frozenset(ops), header["tensorrt_version"], int(header["opset_min"]), int(header["opset_max"]))


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """All nodes, including those inside If/Loop/Scan subgraphs."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from iter_nodes(subgraph)


def operator_counts(model: onnx.ModelProto) -> Counter[str]:
    """``op_type`` (prefixed with ``domain::`` outside the default ONNX domain) -> number of nodes."""
    return Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        for node in iter_nodes(model.graph)
    )


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise ValueError("ONNX model imports no default-domain opset")


def tensorrt_problems(model: onnx.ModelProto, supported: SupportedOps | None = None) -> list[str]:
    """Everything in ``model`` the TensorRT ONNX parser would refuse; empty when it is all supported."""
    supported = supported or load_supported_ops()
    problems: list[str] = []
    opset = default_opset(model)
    if not supported.opset_min <= opset <= supported.opset_max:
        problems.append(f"opset {opset} outside TensorRT {supported.tensorrt_version}'s range "
                        f"{supported.opset_min}..{supported.opset_max}")
    unsupported = {op: n for op, n in operator_counts(model).items() if op not in supported.ops}
    if unsupported:
        problems.append("operators not supported by the TensorRT ONNX parser: "
                        + ", ".join(f"{op} (x{n})" for op, n in sorted(unsupported.items())))
    initializers = {init.name: init for init in model.graph.initializer}
    for node in iter_nodes(model.graph):
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Resize":
            problems += _resize_problems(node.name, attributes)
        elif node.op_type == "TopK" and len(node.input) > 1 and node.input[1] in initializers:
            k = int(numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)[0])
            if k >= TOPK_MAX_K:
                problems.append(f"TopK {node.name!r}: K={k} must be < {TOPK_MAX_K}")
    return problems


def _resize_problems(name: str, attributes: dict[str, Any]) -> list[str]:
    def text(key: str, default: str) -> str:
        value = attributes.get(key, default)
        return value.decode() if isinstance(value, bytes) else str(value)

    problems = []
    mode = text("mode", "nearest")
    if mode not in RESIZE_MODES:
        problems.append(f"Resize {name!r}: mode {mode!r} not in {sorted(RESIZE_MODES)}")
    coordinate = text("coordinate_transformation_mode", "half_pixel")
    if coordinate not in RESIZE_COORDINATE_MODES:
        problems.append(f"Resize {name!r}: coordinate_transformation_mode {coordinate!r} unsupported")
    if mode == "nearest" and text("nearest_mode", "round_prefer_floor") not in RESIZE_NEAREST_MODES:
        problems.append(f"Resize {name!r}: nearest_mode {text('nearest_mode', '')!r} unsupported")
    if int(attributes.get("antialias", 0)):
        problems.append(f"Resize {name!r}: antialiasing is unsupported")
    return problems


def check_tensorrt_compatible(model: onnx.ModelProto, supported: SupportedOps | None = None) -> None:
    """Raise ValueError listing what TensorRT's ONNX parser does not support."""
    problems = tensorrt_problems(model, supported)
    if problems:
        raise ValueError("ONNX model is not TensorRT-compatible: " + "; ".join(problems))


def initializer_numel(model: onnx.ModelProto) -> dict[str, int]:
    """Number of elements of each initializer (from dims, without loading external data)."""
    return {init.name: int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer}


def parameter_initializers(model: onnx.ModelProto, parameters: Mapping[str, np.ndarray]) -> dict[str, str]:
    """For each of ``parameters`` (torch name -> values) that ``model`` carries, the initializer holding it.

    That is the initializer of the same name, or, where the exporter's initializer deduplication (the TorchScript
    exporter's ``deduplicate_initializers`` pass) merged parameters of identical values into one (the ones and
    zeros of freshly initialised BatchNorms, say), the initializer of identical shape and values that was kept
    (another parameter's or a buffer's).
    Parameters the graph never uses are not exported and not in the result.
    """
    names = {init.name for init in model.graph.initializer}
    holders = {name: name for name in parameters if name in names}
    missing = [name for name in parameters if name not in names]
    if missing:
        kept = {_value_key(numpy_helper.to_array(init)): init.name for init in model.graph.initializer}
        for name in missing:
            twin = kept.get(_value_key(parameters[name]))
            if twin is not None:
                holders[name] = twin
    return holders


def _value_key(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes()


def exported_parameter_count(model: onnx.ModelProto, parameters: Mapping[str, np.ndarray]) -> int:
    """Elements of the given (torch) parameters that ``model`` carries (``parameter_initializers``).

    Every parameter must be carried: one the exporter folded or renamed would otherwise silently go uncounted.
    """
    holders = parameter_initializers(model, parameters)
    missing = sorted(set(parameters) - set(holders))
    if missing:
        raise ValueError(f"{len(missing)} parameter(s) absent from the ONNX initializers, e.g. {missing[:5]}")
    return sum(int(parameters[name].size) for name in holders)
