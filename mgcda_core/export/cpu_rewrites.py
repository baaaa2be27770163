"""Graph rewrites that make an ONNX model faster on ONNX Runtime's CPU provider, applied when a CPU session is
created; the exported file keeps the plain operators (TensorRT and other runtimes have fast native kernels for them).

PReLU with a per-channel slope ``a`` becomes ``a * x + (1 - a) * relu(x)``, the two scalings as 1x1 depthwise
convolutions. The same function for every ``a`` (for x > 0 both terms add to x, for x <= 0 the second is zero):
exact for x <= 0, within three float32 roundings for x > 0. Why: ONNX Runtime's PRelu kernel is a generic broadcasting element-wise
loop that runs outside its blocked (NCHWc) convolution layout, so each one also reorders its feature map out and
back; convolutions, Relu and Add stay in that layout. Measured on the shipped real-time graph at 256x512 (ESPNetv2's
64 PReLUs), 2 threads: 155.8 -> 136.4 ms in one A/B run (docs/DEPLOYMENT.md).

A sum or mean over the channels of an N x C x H x W map becomes a 1x1 convolution with weights 1 or 1/C (equal
within float32 rounding of the summation order), a maximum over them a Split into C maps and one element-wise Max
(bit-identical). Why: ONNX Runtime's ReduceSum/ReduceMean/ReduceMax over axis 1 of NCHW stride through memory one
channel plane apart, while a convolution and an element-wise Max stream it: over 19 x 256 x 512 logits, 2 threads,
2.46 -> 0.36 ms for the sum and 2.45 -> 1.76 ms for the maximum (docs/DEPLOYMENT.md). The shipped graph computes its
entropy, softmax distance, class-mean resynthesis and correlations with such reductions.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

__all__ = ["channel_reductions_as_convolutions", "for_cpu", "prelu_as_depthwise_sums"]


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values of the graph's constant tensors: initializers, Constant nodes and Unsqueezes of those (the exporter
    writes nn.PReLU's C-vector slope as Unsqueeze(weight, [1, 2]))."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:  # topological order: an Unsqueeze's inputs come before it
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Unsqueeze" and len(node.input) == 2 and all(name in values for name in node.input):
            data, axes = values[node.input[0]], values[node.input[1]]
            rank = data.ndim + axes.size
            values[node.output[0]] = np.expand_dims(data, tuple(int(axis) % rank for axis in axes.reshape(-1)))
    return values


def _channel_slope(slope: np.ndarray, channels: int | None) -> np.ndarray | None:
    """The slope as a C-vector when it is float32 and per channel (C x 1 x 1 or 1 x C x 1 x 1: PRelu's
    unidirectional broadcast then fixes the input's C), or one value and C is known; else None (a per-row or
    per-width slope is left to the PRelu kernel)."""
    if slope.dtype != np.float32 or slope.ndim > 4:
        return None
    if slope.size == 1:
        return None if channels is None else np.full(channels, slope.reshape(-1)[0], dtype=np.float32)
    if slope.ndim >= 3 and slope.shape[-2:] == (1, 1) and slope.size == slope.shape[-3]:
        return slope.reshape(-1)
    return None


FourD = dict[str, tuple[int, int | None]]  # tensor name -> (element type, channel count or None)


def _symbolic_shapes(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """A copy of ``model`` with ONNX Runtime's symbolic shape inference applied, keeping what it inferred when it
    cannot finish (an operator it does not know); None when it cannot run at all.

    The steps of ``SymbolicShapeInference.infer_shapes``, called one by one: on an unfinished inference that method
    writes the partial model to ``sym_shape_infer_temp.onnx`` in the working directory and raises a bare Exception,
    and this runs whenever a CPU session is made (a ROS node's working directory is not ours to write to)."""
    try:
        inference = SymbolicShapeInference(int_max=2**31 - 1, auto_merge=True, guess_output_rank=False, verbose=0)
        inference._preprocess(model)
        while inference.run_:
            inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_
    except Exception:  # any failure of an optional speed-up: the caller falls back to onnx's inference
        return None


def _four_d_float_tensors(model: onnx.ModelProto) -> FourD:
    """Every 4-d tensor whose shape is inferred: its element type and its channel count where known.

    ONNX Runtime's symbolic shape inference follows shapes the graph computes (a Resize to sizes taken from Shape
    ops, as the exporter writes every interpolation), where onnx's own inference loses the channel count. Where it
    cannot run, onnx's inference is used: fewer tensors known, fewer rewrites.
    """
    inferred = _symbolic_shapes(model)
    graph = (inferred if inferred is not None else onnx.shape_inference.infer_shapes(model)).graph
    tensors: FourD = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 4:
                channel = dims[1].dim_value if dims[1].HasField("dim_value") else None
                tensors[info.name] = (info.type.tensor_type.elem_type, channel)
    return tensors


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove nodes and initializers nothing reads any more (the rewritten PReLUs' slope Unsqueezes and weights).
    A graph with subgraphs (If, Loop) is left whole: their reads are not followed here."""
    if any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in model.graph.node for attribute in node.attribute):
        return
    outputs = {info.name for info in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | outputs
        keep = [node for node in model.graph.node if any(name in read for name in node.output)]
        if len(keep) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(keep)
    unused = [init for init in model.graph.initializer if init.name not in read]
    for init in unused:
        model.graph.initializer.remove(init)


def _replace_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto], rewritten: int) -> int:
    """The graph's nodes become ``nodes``; when a rewrite happened, what nothing reads any more goes. Returns
    ``rewritten``."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if rewritten:
        _drop_unused(model)
    return rewritten


def prelu_as_depthwise_sums(model: onnx.ModelProto, tensors: FourD | None = None) -> int:
    """Rewrite, in place, every PRelu on an N x C x H x W tensor with a constant float32 slope, per channel or one
    for all (C known), as depthwise(a) + depthwise(1 - a) of relu; returns how many were rewritten. Other PRelus are
    left as they are. ``tensors``: the model's inferred 4-d tensors, when the caller has them already."""
    constants = _constants(model)
    if tensors is None:
        tensors = _four_d_float_tensors(model)
    four_d = {name: channels for name, (_, channels) in tensors.items()}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for index, node in enumerate(model.graph.node):
        slope = constants.get(node.input[1]) if node.op_type == "PRelu" else None
        four_d_input = node.op_type == "PRelu" and node.input[0] in four_d
        channel_slope = _channel_slope(slope, four_d[node.input[0]]) if slope is not None and four_d_input else None
        if channel_slope is None:
            nodes.append(node)
            continue
        prefix = f"cpu_prelu_{index}"
        complement = (np.float32(1.0) - channel_slope).astype(np.float32)
        model.graph.initializer.extend([
            numpy_helper.from_array(channel_slope.reshape(-1, 1, 1, 1), f"{prefix}_slope"),
            numpy_helper.from_array(complement.reshape(-1, 1, 1, 1), f"{prefix}_complement"),
        ])
        source, target = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Relu", [source], [f"{prefix}_relu"], name=f"{prefix}_Relu"),
            helper.make_node("Conv", [source, f"{prefix}_slope"], [f"{prefix}_scaled"], name=f"{prefix}_Scale",
                             group=channel_slope.size),
            helper.make_node("Conv", [f"{prefix}_relu", f"{prefix}_complement"], [f"{prefix}_scaled_relu"],
                             name=f"{prefix}_ScaleRelu", group=channel_slope.size),
            helper.make_node("Add", [f"{prefix}_scaled", f"{prefix}_scaled_relu"], [target], name=f"{prefix}_Add"),
        ]
        rewritten += 1
    return _replace_nodes(model, nodes, rewritten)


def _opset(model: onnx.ModelProto) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _reduced_axes(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int] | None:
    """A Reduce node's axes: its attribute (older opsets) or its constant second input; None when computed at run
    time or absent (absent means all axes)."""
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(axis) for axis in constants[node.input[1]].reshape(-1)]
    return None


def channel_reductions_as_convolutions(model: onnx.ModelProto, tensors: FourD | None = None) -> int:
    """Rewrite, in place, every ReduceSum, ReduceMean and ReduceMax over the channel axis (only) of a float32
    N x C x H x W tensor with C known: the sum and the mean as a 1x1 convolution to one channel with weights 1 or
    1/C, the maximum as Split into C maps and an element-wise Max, then a Squeeze where the node dropped the axis
    (keepdims = 0). Returns how many were rewritten; other reductions are left as they are. ``tensors``: the model's
    inferred 4-d tensors, when the caller has them already."""
    constants = _constants(model)
    four_d = tensors if tensors is not None else _four_d_float_tensors(model)
    opset = _opset(model)
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for index, node in enumerate(model.graph.node):
        element_type, channels = four_d.get(node.input[0], (None, None)) if node.input else (None, None)
        axes = _reduced_axes(node, constants) if node.op_type in ("ReduceSum", "ReduceMean", "ReduceMax") else None
        if (axes is None or [axis % 4 for axis in axes] != [1] or element_type != onnx.TensorProto.FLOAT
                or channels is None):
            nodes.append(node)
            continue
        prefix = f"cpu_reduce_{index}"
        keepdims = next((attribute.i for attribute in node.attribute if attribute.name == "keepdims"), 1)
        kept = node.output[0] if keepdims else f"{prefix}_kept"
        if node.op_type == "ReduceMax":
            parts = [f"{prefix}_channel{channel}" for channel in range(channels)]
            if opset >= 13:
                model.graph.initializer.append(numpy_helper.from_array(np.ones(channels, np.int64), f"{prefix}_split"))
                split = helper.make_node("Split", [node.input[0], f"{prefix}_split"], parts, name=f"{prefix}_Split",
                                         axis=1)
            else:
                split = helper.make_node("Split", [node.input[0]], parts, name=f"{prefix}_Split", axis=1,
                                         split=[1] * channels)
            nodes += [split, helper.make_node("Max", parts, [kept], name=f"{prefix}_Max")]
        else:
            weight = np.float32(1.0) if node.op_type == "ReduceSum" else np.float32(1.0) / np.float32(channels)
            model.graph.initializer.append(
                numpy_helper.from_array(np.full((1, channels, 1, 1), weight, np.float32), f"{prefix}_weight"))
            nodes.append(helper.make_node("Conv", [node.input[0], f"{prefix}_weight"], [kept], name=f"{prefix}_Conv"))
        if not keepdims:
            if opset >= 13:
                model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), f"{prefix}_axis"))
                nodes.append(helper.make_node("Squeeze", [kept, f"{prefix}_axis"], [node.output[0]],
                                              name=f"{prefix}_Squeeze"))
            else:
                nodes.append(helper.make_node("Squeeze", [kept], [node.output[0]], name=f"{prefix}_Squeeze", axes=[1]))
        rewritten += 1
    return _replace_nodes(model, nodes, rewritten)


def for_cpu(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with the CPU rewrites applied (``model`` itself is not changed)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    # One shape inference serves both: the PReLU rewrite keeps every tensor it does not add, with its shape.
    tensors = _four_d_float_tensors(copy)
    prelu_as_depthwise_sums(copy, tensors)
    channel_reductions_as_convolutions(copy, tensors)
    return copy
