"""ONNX export and static checks on small torch modules: TensorRT operator support, input/output contract,
parameter counting, dynamic shapes, and the float16 conversion used for TensorRT 11."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from mgcda_core.export.__main__ import main
from mgcda_core.export.onnx_checks import (
    SUPPORTED_OPS_FILE,
    check_tensorrt_compatible,
    exported_parameter_count,
    load_supported_ops,
    parameter_initializers,
    tensorrt_problems,
)
from mgcda_core.export.onnx_export import (
    NOISE_FACTOR,
    ExportConfig,
    check_agreement,
    export_onnx,
    export_to_proto,
    float32_error,
)
from mgcda_core.export.tensorrt_builder import BuildConfig, profile_for, to_mixed_precision
from mgcda_core.graph_io import check_io
from mgcda_core.runtime.factory import tensorrt_unavailable_reason

SMALL = ExportConfig(height=64, width=128)


class TinyScorer(torch.nn.Module):
    """image -> N x 1 x H x W: downsample, conv + BatchNorm + PReLU, upsample (ops the real pipeline uses)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.act = torch.nn.PReLU(8)
        self.head = torch.nn.Conv2d(8, 1, 1)
        with torch.no_grad():  # non-trivial BatchNorm statistics, so folding mistakes would show
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(image, scale_factor=0.5, mode="bilinear", align_corners=False)
        x = self.head(self.act(self.bn(self.conv(x))))
        return torch.sigmoid(F.interpolate(x, size=image.shape[2:], mode="bilinear", align_corners=False))


class UsesUnique(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image[:, :1] * torch.unique(image).numel()


class FirstChannel(torch.nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image[:, :1]


def make_model(op: str = "Relu", input_name: str = "image", channels: int = 3, extra_output: bool = False,
               opset: int = 17, **attributes) -> onnx.ModelProto:
    """A one-node ONNX model built by hand."""
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, channels, 64, 128])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, None)
    nodes = [helper.make_node(op, [input_name], ["score"], name=f"the_{op}", **attributes)]
    outputs = [y]
    if extra_output:
        nodes.append(helper.make_node("Identity", [input_name], ["copy"]))
        outputs.append(helper.make_tensor_value_info("copy", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [x], outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_supported_list_is_parsed_with_its_source_header() -> None:
    supported = load_supported_ops()
    assert supported.tensorrt_version == "10.15"
    assert (supported.opset_min, supported.opset_max) == (9, 24)
    assert {"Conv", "ConvTranspose", "InstanceNormalization", "Resize", "Selu", "PRelu"} <= supported.ops
    assert not {"Unique", "SequenceAt", "ConvInteger"} & supported.ops  # "N" rows of the matrix
    header = SUPPORTED_OPS_FILE.read_text().splitlines()[:6]
    assert any("onnx/onnx-tensorrt" in line for line in header) and any("docs/operators.md" in line for line in header)


def test_unsupported_operator_and_attributes_are_named() -> None:
    assert tensorrt_problems(make_model("Relu")) == []
    problems = tensorrt_problems(make_model("Unique"))
    assert len(problems) == 1 and "Unique (x1)" in problems[0]
    with pytest.raises(ValueError, match="Unique"):
        check_tensorrt_compatible(make_model("Unique"))
    cubic = tensorrt_problems(make_model("Resize", mode="cubic"))
    assert any("'the_Resize'" in p and "cubic" in p for p in cubic)
    assert any("opset 7" in p for p in tensorrt_problems(make_model("Relu", opset=7)))


def test_export_refuses_a_graph_tensorrt_cannot_parse(tmp_path: Path) -> None:
    path = tmp_path / "unique.onnx"
    with pytest.raises(ValueError, match="Unique"):
        export_onnx(UsesUnique(), path, SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (make_model(input_name="input.1"), "'input.1'.*expected exactly one named 'image'"),
        (make_model(channels=1), r"'image' is float32 \[1, 1, 64, 128\], expected float32 N x 3 x H x W"),
        (make_model(extra_output=True), "expected one float32 output"),
    ],
)
def test_input_output_contract_is_enforced_by_name(model: onnx.ModelProto, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_io(model)


def test_fixed_size_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="expected H x W = 256 x 512"):
        check_io(make_model(), size=(256, 512))


def test_export_keeps_parameters_and_matches_torch(tmp_path: Path) -> None:
    graph = TinyScorer().eval()
    report = export_onnx(graph, tmp_path / "tiny.onnx", SMALL)
    model = onnx.load(str(tmp_path / "tiny.onnx"))
    parameters = {name: p.detach().numpy() for name, p in graph.named_parameters()}
    by_hand = (3 * 9 * 8 + 8) + 2 * 8 + 8 + (8 + 1)  # conv, BatchNorm affine, PReLU, head
    assert exported_parameter_count(model, parameters) == sum(p.numel() for p in graph.parameters()) == by_hand
    with pytest.raises(ValueError, match="absent from the ONNX initializers"):
        exported_parameter_count(model, {**parameters, "not.a.parameter": np.full(5, 7.0, np.float32)})
    image = np.random.default_rng(0).random((1, 3, 64, 128), dtype=np.float32)
    (onnx_out,) = ort.InferenceSession(str(tmp_path / "tiny.onnx")).run(None, {"image": image})
    with torch.no_grad():
        assert np.abs(onnx_out - graph(torch.from_numpy(image)).numpy()).max() <= 1e-5
    assert report.max_abs_diff_onnxruntime_vs_torch <= report.max_abs_diff_allowed
    # in float64 as the check does (NumPy 2 would keep a Python float + np.float32 sum in float32)
    spacing = float(np.spacing(np.float32(report.output_max_abs)))
    assert report.max_abs_diff_allowed == NOISE_FACTOR * (report.float32_error + spacing)


class TwoFreshBatchNorms(torch.nn.Module):
    """Two untrained BatchNorms: equal weights (ones) and biases (zeros), which the exporter stores once."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn_1, self.bn_2 = torch.nn.BatchNorm2d(8), torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Conv2d(8, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn_2(torch.relu(self.bn_1(self.conv(image)))))


def test_parameters_merged_by_the_exporter_still_count() -> None:
    graph = TwoFreshBatchNorms().eval()
    model = export_to_proto(graph, SMALL)
    parameters = {name: p.detach().numpy() for name, p in graph.named_parameters()}
    names = {init.name for init in model.graph.initializer}
    assert not set(parameters) <= names  # some BatchNorm parameters were merged into one initializer
    holders = parameter_initializers(model, parameters)
    assert set(holders) == set(parameters) and set(holders.values()) <= names
    assert all(np.array_equal(parameters[name], numpy_helper.to_array(
        next(i for i in model.graph.initializer if i.name == holder))) for name, holder in holders.items())
    assert exported_parameter_count(model, parameters) == (3 * 9 * 8 + 8) + 2 * (2 * 8) + (8 + 1)


def test_dynamic_export_runs_at_other_sizes() -> None:
    graph = TinyScorer().eval()
    model = export_to_proto(graph, ExportConfig(height=64, width=128, dynamic=True))
    spec, _ = check_io(model)
    assert all(isinstance(d, str) for d in (spec.shape[0], spec.shape[2], spec.shape[3]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 64, 128), (2, 3, 96, 160)):
        image = np.random.default_rng(1).random(shape, dtype=np.float32)
        (out,) = session.run(None, {"image": image})
        with torch.no_grad():
            assert np.abs(out - graph(torch.from_numpy(image)).numpy()).max() <= 1e-5


def test_export_config_refuses_sizes_the_pipeline_cannot_take() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        ExportConfig(height=250, width=512)


def test_float32_error_is_zero_without_arithmetic_and_rounding_sized_with_it() -> None:
    image = np.random.default_rng(2).random((1, 3, 64, 128), dtype=np.float32)
    output, error = float32_error(FirstChannel(), image)
    assert error == 0.0 and np.array_equal(output, image[:, :1])
    graph = TinyScorer().eval()
    output, error = float32_error(graph, image)
    with torch.no_grad():
        assert np.array_equal(output, graph(torch.from_numpy(image)).numpy())  # the float32 graph is untouched
    # sigmoid outputs in (0, 1) after a 27- and an 8-term sum: rounding, far below one 2^-16 step
    assert 0.0 < error < 2.0**-16
    assert next(graph.parameters()).dtype == torch.float32


class NearTies(torch.nn.Module):
    """Two logits equal in exact arithmetic (x * 3 / 3 and x) that float32 rounding sets an ulp apart at some
    pixels: the argmax there depends on rounding, and the output carries it at full scale."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        first = image[:, :1]
        logits = torch.cat((first * 3 / 3, first), 1)
        return logits.argmax(1, keepdim=True).to(image.dtype) + logits.max(1, keepdim=True).values


def test_float32_error_keeps_the_float32_runs_decisions() -> None:
    image = np.random.default_rng(6).random((1, 3, 64, 128), dtype=np.float32)
    first = torch.from_numpy(image[:, :1])
    single = torch.cat((first * 3 / 3, first), 1).argmax(1)
    double = torch.cat((first.double() * 3 / 3, first.double()), 1).argmax(1)
    assert (single != double).any()  # float64 alone would pick the other class at some pixels, a difference of 1
    output, error = float32_error(NearTies(), image)
    assert output.max() > 1 and error <= np.spacing(np.float32(2.0))  # only the max's rounding is left


def _with_initializer_scaled(model: onnx.ModelProto, name: str, factor: float) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    (initializer,) = [i for i in changed.graph.initializer if i.name == name]
    initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) * factor, name))
    return changed


def _with_op_replaced(model: onnx.ModelProto, op: str, by: str) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    (node,) = [n for n in changed.graph.node if n.op_type == op]
    node.op_type = by
    del node.input[1:]  # PRelu's slope: Relu has one input
    return changed


def test_agreement_check_refuses_a_broken_graph() -> None:
    graph = TinyScorer().eval()
    model = export_to_proto(graph, SMALL)
    image = np.random.default_rng(5).random((1, 3, 64, 128), dtype=np.float32)
    agreement = check_agreement(model, graph, image)
    assert agreement.max_abs_diff <= agreement.allowed and agreement.float32_error > 0
    # a weight 0.1 % off (as a wrong BatchNorm fold would make it), a PReLU exported as ReLU
    for broken in (_with_initializer_scaled(model, "head.weight", 1.001), _with_op_replaced(model, "PRelu", "Relu")):
        with pytest.raises(ValueError, match="differs from PyTorch by .* computes something else"):
            check_agreement(broken, graph, image)


def test_mixed_precision_conversion_for_tensorrt_11() -> None:
    graph = TinyScorer().eval()
    model = export_to_proto(graph, SMALL)
    half = to_mixed_precision(model)
    check_io(half)  # still float32 in and out
    types = {init.name: init.data_type for init in half.graph.initializer}
    assert types["conv.weight"] == types["head.weight"] == TensorProto.FLOAT16
    assert tensorrt_problems(half) == []
    image = np.random.default_rng(4).random((1, 3, 64, 128), dtype=np.float32)
    session = ort.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"image": image})
    with torch.no_grad():
        expected = graph(torch.from_numpy(image)).numpy()
    assert out.dtype == np.float32
    assert 0 < np.abs(out - expected).max() <= 5e-3  # float16 rounding, not float32 agreement


def test_export_is_deterministic_across_processes(tmp_path: Path) -> None:
    """Engine-cache keys hash the ONNX bytes, so exporting the same graph twice must give the same bytes."""
    graph = TinyScorer().eval()
    torch.save(graph.state_dict(), tmp_path / "tiny.pt")
    script = (
        "import hashlib, sys, torch; sys.path.insert(0, sys.argv[1]);"
        "from test_export_checks import TinyScorer, SMALL;"
        "from mgcda_core.export.onnx_export import export_to_proto;"
        "g = TinyScorer(); g.load_state_dict(torch.load(sys.argv[2], weights_only=True));"
        "print(hashlib.sha256(export_to_proto(g.eval(), SMALL).SerializeToString()).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path / "tiny.pt")],
                           capture_output=True, text=True, check=True).stdout.strip()
    here = hashlib.sha256(export_to_proto(graph, SMALL).SerializeToString()).hexdigest()
    assert other == here


def test_engine_profile_from_the_onnx_shape() -> None:
    fixed = export_to_proto(TinyScorer().eval(), SMALL)
    assert profile_for(fixed, 256, 512) == ((1, 3, 64, 128),) * 3  # a fixed ONNX wins over the requested size
    dynamic = export_to_proto(TinyScorer().eval(), ExportConfig(height=64, width=128, dynamic=True))
    assert profile_for(dynamic, 256, 512, 512, 1024) == ((1, 3, 32, 32), (1, 3, 256, 512), (1, 3, 512, 1024))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BuildConfig(min_shape=(1, 3, 64, 64), opt_shape=(1, 3, 32, 32), max_shape=(1, 3, 64, 64))
    with pytest.raises(ValueError, match="precision"):
        BuildConfig(precision="int8")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None and tensorrt_unavailable_reason("cuda:0") is None,
                    reason="TensorRT and a GPU are present: the engine would be built")
def test_build_only_without_tensorrt_fails_with_one_clear_message(tmp_path: Path, capsys) -> None:
    onnx.save(export_to_proto(TinyScorer().eval(), SMALL), str(tmp_path / "tiny.onnx"))
    code = main(["--onnx", str(tmp_path / "tiny.onnx"), "--engine", str(tmp_path / "tiny.engine"), "--build-only"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("error:") == 1
    assert "TensorRT is not installed" in error or "cudaGetDeviceCount failed" in error
    assert not (tmp_path / "tiny.engine").exists()


class ShapeInPython(torch.nn.Module):
    """Builds a tensor from Python ints taken from the input shape: the tracer freezes them."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rows = torch.linspace(0.0, 1.0, int(image.shape[2])).view(1, 1, -1, 1)
        return image[:, :1] * rows


def test_dynamic_export_that_does_not_generalise_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "frozen.onnx"
    with pytest.raises(ValueError, match="does not generalise: at 2x3x96x192"):
        export_onnx(ShapeInPython(), path, ExportConfig(height=64, width=128, dynamic=True))
    assert not path.exists()
    report = export_onnx(TinyScorer().eval(), path, ExportConfig(height=64, width=128, dynamic=True))
    assert report.description["dynamic_check"]["size"] == [2, 3, 96, 192]
    assert report.description["dynamic_check"]["max_abs_diff"] <= 1e-5


def test_exported_same_padding_folds_into_the_convolution_in_onnx_runtime(tmp_path: Path) -> None:
    # F.pad is exported with an empty constant-value input; without it ONNX Runtime fuses the Pad into the Conv
    from mgcda_core.export.onnx_export import ExportConfig, export_to_proto

    class PadConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.nn.functional.pad(x, (0, 1, 0, 1)))

    net = PadConv().eval()
    model = export_to_proto(net, ExportConfig(height=32, width=64))
    pads = [n for n in model.graph.node if n.op_type == "Pad"]
    assert pads and all(n.input[-1] != "" for n in pads)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node].count("Pad") == 0
    x = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, rtol=0, atol=1e-5)
