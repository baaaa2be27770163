"""The CPU runtime's graph rewrites: PReLU as depthwise scalings of x and relu(x), channel reductions as
convolutions and element-wise maxima; same outputs, plain file kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mgcda_core.export.cpu_rewrites import channel_reductions_as_convolutions, for_cpu, prelu_as_depthwise_sums
from mgcda_core.export.onnx_export import ExportConfig, check_agreement, export_to_proto, reference_image
from mgcda_core.runtime.onnx_runtime import OnnxRuntime

SMALL = ExportConfig(height=32, width=64)


class Activations(torch.nn.Module):
    """image -> N x 1 x H x W through a per-channel PReLU (slopes negative, in [0, 1] and above 1) and a
    single-slope PReLU (one value for all channels), each after a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.per_channel = torch.nn.PReLU(6)
        self.mix = torch.nn.Conv2d(6, 4, 1)
        self.single = torch.nn.PReLU()
        self.head = torch.nn.Conv2d(4, 1, 1)
        with torch.no_grad():
            self.per_channel.weight.copy_(torch.tensor([-0.5, 0.0, 0.1, 0.25, 1.0, 2.5]))
            self.single.weight.fill_(0.3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.single(self.mix(self.per_channel(self.conv(image)))))


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _run(model: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image})[0]


def test_both_prelus_rewritten_and_outputs_agree() -> None:
    torch.manual_seed(0)
    module = Activations().eval()
    model = export_to_proto(module, SMALL)
    assert _ops(model).count("PRelu") == 2
    rewritten = for_cpu(model)
    assert _ops(model).count("PRelu") == 2  # the input model is not changed
    assert _ops(rewritten).count("PRelu") == 0
    groups = sorted(a.i for node in rewritten.graph.node if node.op_type == "Conv" for a in node.attribute
                    if a.name == "group" and a.i > 1)
    assert groups == [4, 4, 6, 6]  # two depthwise scalings per PReLU, over its channels
    slopes = sorted(numpy_helper.to_array(init).reshape(-1).tolist() for init in rewritten.graph.initializer
                    if init.name.endswith("_slope"))
    assert slopes == [pytest.approx([-0.5, 0.0, 0.1, 0.25, 1.0, 2.5]), pytest.approx([0.3] * 4)]
    onnx.checker.check_model(rewritten, full_check=True)
    # Within float32 rounding of PyTorch (the export check runs the rewritten graph), and of the plain graph.
    image = reference_image(SMALL) * 4.0 - 2.0  # both signs at every PReLU
    agreement = check_agreement(model, module, image)
    assert agreement.max_abs_diff <= agreement.allowed
    plain, fast = _run(model, image), _run(rewritten, image)
    assert np.abs(fast - plain).max() <= 8 * np.spacing(np.float32(np.abs(plain).max()))
    assert np.abs(OnnxRuntime(model).run(image) - plain).max() <= 8 * np.spacing(np.float32(np.abs(plain).max()))


def test_slope_unsqueezes_and_their_weights_are_dropped_once_unused() -> None:
    model = export_to_proto(Activations().eval(), SMALL)
    rewritten = for_cpu(model)
    read = {name for node in rewritten.graph.node for name in node.input}
    assert all(init.name in read for init in rewritten.graph.initializer)
    assert _ops(rewritten).count("Unsqueeze") < _ops(model).count("Unsqueeze")
    assert "per_channel.weight" not in {init.name for init in rewritten.graph.initializer}


def _prelu_graph(slope: np.ndarray | None, shape: list[int | str]) -> onnx.ModelProto:
    """x -> PRelu(x, slope): the slope an initializer, or (None) a second graph input."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    initializers = []
    if slope is None:
        inputs.append(helper.make_tensor_value_info("slope", TensorProto.FLOAT, [shape[1], 1, 1]))
    else:
        initializers.append(numpy_helper.from_array(slope, "slope"))
    graph = helper.make_graph([helper.make_node("PRelu", ["x", "slope"], ["y"])], "prelu", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("slope", "shape"), [
    (None, [1, 3, 4, 5]),  # slope computed at run time
    (np.full((5,), 0.2, np.float32), [1, 3, 4, 5]),  # per-width slope: broadcasts over the last axis
    (np.full((4, 1), 0.2, np.float32), [1, 3, 4, 5]),  # per-row slope
    (np.full((3, 1, 1), 0.2, np.float64), [1, 3, 4, 5]),  # not float32
    (np.full((3, 1, 1), 0.2, np.float32), [3, 4, 5]),  # 3-d input
])
def test_prelus_that_are_not_per_channel_float32_on_4d_maps_are_left_alone(slope: np.ndarray | None,
                                                                           shape: list[int | str]) -> None:
    model = _prelu_graph(slope, shape)
    before = model.SerializeToString()
    assert prelu_as_depthwise_sums(model) == 0
    assert model.SerializeToString() == before


def test_rewritten_graph_matches_prelu_on_signed_values_and_zero() -> None:
    slope = np.array([-1.5, 0.0, 0.3, 1.0, 4.0], np.float32).reshape(5, 1, 1)
    model = _prelu_graph(slope, [2, 5, 3, 4])
    x = np.random.default_rng(0).normal(scale=10.0, size=(2, 5, 3, 4)).astype(np.float32)
    x[0, :, 0, 0] = 0.0
    x[1, :, 0, 0] = -0.0
    assert prelu_as_depthwise_sums(model) == 1
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    expected = np.where(x > 0, x, x * slope)  # ONNX PRelu, in float32
    # a*x + (1-a)*relu(x): exact for x <= 0; for x > 0 three roundings (a*x, (1-a)*x, the sum) of numbers <= |x|*|a|+.
    bound = 3 * np.spacing(np.abs(x) * np.maximum(1.0, np.abs(slope) + np.abs(1 - slope)))
    assert np.all(np.abs(y - expected) <= bound)
    assert np.array_equal(y[x <= 0], expected[x <= 0])


def test_per_channel_slope_fixes_an_unknown_channel_count_and_a_single_slope_needs_it() -> None:
    per_channel = _prelu_graph(np.full((3, 1, 1), 0.2, np.float32), [1, "c", 4, 5])
    assert prelu_as_depthwise_sums(per_channel) == 1  # PRelu's broadcast makes C = 3
    single = _prelu_graph(np.full((1,), 0.2, np.float32), [1, "c", 4, 5])
    assert prelu_as_depthwise_sums(single) == 0  # C unknown: no depthwise weight can be built


# --- channel reductions -------------------------------------------------------------------------------------------

U = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32


def _reduction_graph(opset: int, op: str, keepdims: int, axes: list[int], shape: list[int | str],
                     element_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x -> op over ``axes``: the axes an attribute where the opset says so (ReduceSum before 13, the others before
    18), else a constant input."""
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    initializers = [numpy_helper.from_array(np.array(axes, np.int64), "axes")] if as_input else []
    node = (helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims) if as_input
            else helper.make_node(op, ["x"], ["y"], keepdims=keepdims, axes=axes))
    reduced = {axis % len(shape) for axis in axes}
    out_shape = [1 if axis in reduced else size for axis, size in enumerate(shape) if keepdims or axis not in reduced]
    graph = helper.make_graph([node], "reduce", [helper.make_tensor_value_info("x", element_type, shape)],
                              [helper.make_tensor_value_info("y", element_type, out_shape)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _run_x(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("opset", [11, 13, 17, 18])
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax"])
@pytest.mark.parametrize(("keepdims", "axis"), [(1, 1), (0, 1), (1, -3)])
def test_channel_reductions_become_convolutions_or_maxima_with_the_same_values(opset: int, op: str, keepdims: int,
                                                                            axis: int) -> None:
    shape = [2, 19, 6, 10]
    model = _reduction_graph(opset, op, keepdims, [axis], shape)
    assert channel_reductions_as_convolutions(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert not any(node.op_type.startswith("Reduce") for node in model.graph.node)
    assert {"ReduceSum": "Conv", "ReduceMean": "Conv", "ReduceMax": "Max"}[op] in _ops(model)
    x = np.random.default_rng(opset).normal(scale=5.0, size=shape).astype(np.float32)
    y = _run_x(model, x)
    reference = {"ReduceSum": np.sum, "ReduceMean": np.mean, "ReduceMax": np.max}[op](x.astype(np.float64), axis=1,
                                                                                      keepdims=bool(keepdims))
    assert y.shape == reference.shape and y.dtype == np.float32
    if op == "ReduceMax":
        assert np.array_equal(y, reference.astype(np.float32))  # a maximum is exact in any order
    else:
        # float32 sum of C products by weights w (1, or 1/C rounded): at most (C + 1) roundings of terms <= w |x_c|
        magnitude = np.sum(np.abs(x.astype(np.float64)), axis=1, keepdims=bool(keepdims))
        scale = 1.0 if op == "ReduceSum" else 1.0 / shape[1]
        assert np.all(np.abs(y - reference) <= (shape[1] + 1) * U * scale * magnitude * (1 + 2 * U))


@pytest.mark.parametrize(("op", "axes", "shape", "element_type"), [
    ("ReduceSum", [2, 3], [1, 4, 5, 6], TensorProto.FLOAT),  # spatial, not channels
    ("ReduceMax", [1, 2], [1, 4, 5, 6], TensorProto.FLOAT),  # channels and more
    ("ReduceMax", [1], [4, 5, 6], TensorProto.FLOAT),  # 3-d input
    ("ReduceMean", [1], [1, "c", 5, 6], TensorProto.FLOAT),  # channel count unknown
    ("ReduceMax", [1], [1, 4, 5, 6], TensorProto.INT32),  # not float32
    ("ReduceSum", [1], [1, 4, 5, 6], TensorProto.DOUBLE),
])
def test_other_reductions_are_left_alone(op: str, axes: list[int], shape: list[int | str], element_type: int) -> None:
    model = _reduction_graph(18, op, 1, axes, shape, element_type)
    before = model.SerializeToString()
    assert channel_reductions_as_convolutions(model) == 0
    assert model.SerializeToString() == before


def test_reductions_with_run_time_or_no_axes_are_left_alone() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["runtime"]),  # axes a graph input
             helper.make_node("ReduceMax", ["x"], ["all"], keepdims=0)]  # no axes: over every axis
    graph = helper.make_graph(nodes, "reduce", [x, helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                               for name in ("runtime", "all")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before = model.SerializeToString()
    assert channel_reductions_as_convolutions(model) == 0
    assert model.SerializeToString() == before


class ChannelStatistics(torch.nn.Module):
    """image -> logits at a computed size (the exporter's Resize from Shape ops, which onnx's own shape inference
    does not follow) -> the entropy-style sums and maxima the inference stages compute over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 19, 3, stride=2, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.interpolate(self.conv(image), size=image.shape[-2:], mode="bilinear",
                                                 align_corners=False)
        shifted = logits - logits.amax(1, keepdim=True)
        exp = shifted.exp()
        return (exp * shifted).sum(1, keepdim=True) / exp.sum(1, keepdim=True) + logits.mean(1, keepdim=True)


def test_reductions_after_an_exported_resize_are_rewritten_and_agree_with_torch() -> None:
    torch.manual_seed(0)
    module = ChannelStatistics().eval()
    model = export_to_proto(module, SMALL)
    rewritten = for_cpu(model)
    assert sum(node.op_type.startswith("Reduce") for node in model.graph.node) == 4
    assert not any(node.op_type.startswith("Reduce") for node in rewritten.graph.node)
    image = reference_image(SMALL)
    agreement = check_agreement(model, module, image)  # runs the rewritten graph, as the CPU runtime does
    assert agreement.max_abs_diff <= agreement.allowed
    plain, fast = _run(model, image), _run(rewritten, image)
    assert np.abs(fast - plain).max() <= 64 * np.spacing(np.float32(np.abs(plain).max()))


def test_a_graph_symbolic_inference_cannot_complete_still_gets_the_rewrites_and_nothing_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An operator of an unknown domain stops ONNX Runtime's symbolic inference before the end (its infer_shapes then
    # writes sym_shape_infer_temp.onnx into the working directory); what it inferred is still used.
    monkeypatch.chdir(tmp_path)
    nodes = [helper.make_node("Unknown", ["x"], ["other"], domain="test.unknown"),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(nodes, "partly_known", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 5, 6]),
                               helper.make_tensor_value_info("other", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("test.unknown", 1)])
    assert channel_reductions_as_convolutions(model) == 1
    assert _ops(model) == ["Unknown", "Conv"]
    assert list(tmp_path.iterdir()) == []
