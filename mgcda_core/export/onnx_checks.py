"""Static checks of an ONNX model: TensorRT operator support, input/output contract, parameter count.

The operator list is the TensorRT ONNX parser's own support matrix (``tensorrt_supported_ops.txt``, header names
its source and version); the few per-operator restrictions our graphs can hit are checked here as well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

SUPPORTED_OPS_FILE = Path(__file__).with_name("tensorrt_supported_ops.txt")

INPUT_NAME = "image"

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


def _resize_problems(name: str, attributes: dict[str, object]) -> list[str]:
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


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape (ints, or strings for symbolic dimensions) of a graph input or output."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def tensor_specs(values: Iterable[onnx.ValueInfoProto]) -> list[TensorSpec]:
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim)
        specs.append(TensorSpec(value.name, onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name, dims))
    return specs


def check_io(model: onnx.ModelProto, input_name: str = INPUT_NAME,
             size: tuple[int, int] | None = None) -> tuple[TensorSpec, TensorSpec]:
    """Check that ``model`` is an inference graph: one float32 input ``input_name`` of shape N x 3 x H x W
    (H, W fixed to ``size`` when given and the model's dims are fixed) and one float32 output.

    Raises ValueError naming what differs.
    """
    initializer_names = {init.name for init in model.graph.initializer}
    inputs = [spec for spec in tensor_specs(model.graph.input) if spec.name not in initializer_names]
    outputs = tensor_specs(model.graph.output)
    if len(inputs) != 1 or inputs[0].name != input_name:
        raise ValueError(f"ONNX model inputs are {[s.name for s in inputs]}, expected exactly one named {input_name!r}")
    spec = inputs[0]
    if spec.dtype != "float32" or len(spec.shape) != 4 or spec.shape[1] != 3:
        raise ValueError(f"ONNX input {input_name!r} is {spec.dtype} {list(spec.shape)}, "
                         "expected float32 N x 3 x H x W")
    if size is not None:
        for axis, wanted in zip((2, 3), size):
            if isinstance(spec.shape[axis], int) and spec.shape[axis] != wanted:
                raise ValueError(f"ONNX input {input_name!r} has fixed shape {list(spec.shape)}, "
                                 f"expected H x W = {size[0]} x {size[1]}")
    if len(outputs) != 1 or outputs[0].dtype != "float32":
        raise ValueError(f"ONNX outputs are {[(s.name, s.dtype) for s in outputs]}, expected one float32 output")
    return spec, outputs[0]


def initializer_numel(model: onnx.ModelProto) -> dict[str, int]:
    """Number of elements of each initializer (from dims, without loading external data)."""
    return {init.name: int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer}


def exported_parameter_count(model: onnx.ModelProto, parameter_names: Iterable[str]) -> int:
    """Elements of ``model``'s initializers that are the given (torch) parameters.

    Every name must be present: a parameter the exporter folded or renamed would otherwise silently go uncounted.
    """
    numel = initializer_numel(model)
    names = set(parameter_names)
    missing = sorted(names - set(numel))
    if missing:
        raise ValueError(f"{len(missing)} parameter(s) absent from the ONNX initializers, e.g. {missing[:5]}")
    return sum(numel[name] for name in names)
