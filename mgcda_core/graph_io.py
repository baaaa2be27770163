"""The input/output contract of an exported inference graph, shared by ``export`` (which checks it after export)
and ``runtime`` (which feeds and reads it): one float32 input named ``image``, N x 3 x H x W RGB in [0, 1], and one
float32 output (see ``mgcda_core/runtime/base.py`` and docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

INPUT_NAME = "image"


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


def check_score_io(model: onnx.ModelProto, size: tuple[int, int]) -> tuple[TensorSpec, TensorSpec]:
    """:func:`check_io`, and the output is a score map the detector reads: N x 1 x H x W, with H x W = ``size``
    where the model's dims are fixed (the input's too). Raises ValueError naming what differs."""
    spec, output = check_io(model, size=size)
    shape = output.shape
    fixed = [axis for axis, wanted in zip(shape[2:], size) if isinstance(axis, int) and axis != wanted]
    if len(shape) != 4 or shape[1] not in (1, "?") or fixed:
        raise ValueError(f"ONNX output {output.name!r} is {list(shape)}, expected a score map N x 1 x H x W "
                         f"(H x W = {size[0]} x {size[1]})")
    return spec, output
