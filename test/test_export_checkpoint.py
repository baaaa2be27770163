"""``python -m mgcda_core.export --checkpoint``: the full inference path with a (tiny) trained dissimilarity network.

The checkpoint is a real training checkpoint (domain classifiers and projector in its training state): the
exported graph must hold exactly the baseline network's parameters, agree with PyTorch under ONNX Runtime, and
use only operators TensorRT's ONNX parser supports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from mgcda_core.export.__main__ import main
from mgcda_core.export.cpu_rewrites import for_cpu
from mgcda_core.export.onnx_export import (
    NOISE_FACTOR,
    ExportConfig,
    check_agreement,
    export_to_proto,
    reference_image,
)
from mgcda_core.export.parameters import parameter_report
from mgcda_core.model.checkpoint import save_model
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.domain_classifiers import FeatureDomainClassifier, OutputDomainClassifier
from mgcda_core.model.projector import ContrastProjector
from mgcda_core.pipeline.detector import build_graph
from mgcda_core.training.run_checkpoints import save_training_checkpoint

ARCHITECTURE = {"encoder": "vgg16", "width": 0.125}
SUPPORTED_OPS_FILE = Path(__file__).resolve().parents[1] / "mgcda_core" / "export" / "tensorrt_supported_ops.txt"


def tiny_dissimnet(seed: int = 0) -> DissimNetPrior:
    torch.manual_seed(seed)
    return DissimNetPrior(**ARCHITECTURE).eval()


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory) -> Path:
    model = tiny_dissimnet()
    training = {
        "feature_classifier": FeatureDomainClassifier(model.fused_channels[-1]).state_dict(),
        "output_classifier": OutputDomainClassifier().state_dict(),
        "projector": ContrastProjector(in_channels=model.decoder_channels).state_dict(),
        "step": 10,
    }
    path = tmp_path_factory.mktemp("ckpt") / "latest.pt"
    save_training_checkpoint(path, model, training, config={"lambda_f": 0.04})
    return path


@pytest.fixture(scope="module")
def exported(training_checkpoint: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "full.onnx"
    assert main(["--checkpoint", str(training_checkpoint), "--onnx", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def graph(training_checkpoint: Path) -> torch.nn.Module:
    return build_graph("dissimilarity", training_checkpoint)


def test_onnxruntime_agrees_with_torch_at_256x512(exported: Path, graph: torch.nn.Module) -> None:
    image = reference_image(ExportConfig())  # the image the exporter checked, so its recorded numbers apply
    # as the exporter's check and the CPU runtime run it (with the CPU rewrites): the recorded difference is theirs
    session = ort.InferenceSession(for_cpu(onnx.load(str(exported))).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"image": image})
    with torch.inference_mode():
        torch_out = graph(torch.from_numpy(image)).numpy()
    assert onnx_out.shape == torch_out.shape == (1, 1, 256, 512)
    assert 0.0 <= onnx_out.min() and onnx_out.max() <= 1.0  # dissimilarity probability
    difference = float(np.abs(onnx_out - torch_out).max())
    sidecar = json.loads(exported.with_name(exported.name + ".json").read_text())
    assert sidecar["max_abs_diff_onnxruntime_vs_torch"] == pytest.approx(difference, abs=1e-7)
    # A randomly initialised SPADE decoder (8 InstanceNorms without affine) amplifies float32 rounding, so the
    # bound is the graph's own measured float32 error (against float64), not a fixed number.
    error = sidecar["float32_error"]
    assert error > 0
    allowed = NOISE_FACTOR * (error + float(np.spacing(np.abs(torch_out).max())))
    assert difference <= sidecar["max_abs_diff_allowed"] == pytest.approx(allowed, rel=1e-12)


def test_a_changed_dissimilarity_weight_is_refused(exported: Path, graph: torch.nn.Module) -> None:
    """The bound is no blanket: the export with the decoder's head weights 10 % off no longer passes."""
    model = onnx.load(str(exported))
    name = "dissimilarity.head.weight"
    (initializer,) = [i for i in model.graph.initializer if i.name == name]
    initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) * 1.1, name))
    with pytest.raises(ValueError, match="computes something else"):
        check_agreement(model, graph, reference_image(ExportConfig()))


def test_exported_parameters_are_the_baseline_networks(exported: Path, training_checkpoint: Path,
                                                       graph: torch.nn.Module) -> None:
    model = onnx.load(str(exported))
    numel = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    state = graph.state_dict()
    # Independent expected count: a freshly built baseline network + the front-half parameters of the modules the
    # forward pass runs (the pretrained backbones hold layers, e.g. classifier heads, the pipeline never calls).
    baseline = sum(p.numel() for p in DissimNetPrior(**ARCHITECTURE).parameters())
    ran: set[str] = set()
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: ran.add(name))
             for name, module in graph.named_modules()]
    with torch.inference_mode():
        graph(torch.rand(1, 3, 64, 128))
    for hook in hooks:
        hook.remove()
    used = {f"{module_name}.{name}" if module_name else name: p.numel()
            for module_name, module in graph.named_modules() if module_name in ran
            for name, p in module.named_parameters(recurse=False)}
    assert sum(n for name, n in used.items() if name.startswith("dissimilarity.")) == baseline
    front = sum(n for name, n in used.items() if not name.startswith("dissimilarity."))
    exported_parameters = sum(n for name, n in numel.items() if name in dict(graph.named_parameters()))
    assert exported_parameters == baseline + front
    # Nothing else of weight size: every other initializer is a buffer of the graph or a small exporter constant.
    others = {name: n for name, n in numel.items() if name not in state}
    assert all(n <= 512 for n in others.values()), others
    # The checkpoint does carry the training-only modules; the equalities above show none reached the ONNX.
    training = torch.load(training_checkpoint, weights_only=True)["training"]
    assert all(sum(t.numel() for t in training[key].values()) > 0
               for key in ("feature_classifier", "output_classifier", "projector"))
    sidecar = json.loads(exported.with_name(exported.name + ".json").read_text())
    assert sidecar["description"]["baseline_dissimnet_parameters"] == baseline
    assert sidecar["description"]["exported_parameters_by_component"]["dissimilarity"] == baseline


def test_every_operator_is_in_the_tensorrt_list(exported: Path) -> None:
    supported = {line.strip() for line in SUPPORTED_OPS_FILE.read_text().splitlines()
                 if line.strip() and not line.startswith("#")}
    model = onnx.load(str(exported))

    def op_types(graph: onnx.GraphProto) -> set[str]:
        found = {node.op_type for node in graph.node}
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    found |= op_types(attribute.g)
        return found

    assert {node.domain for node in model.graph.node} <= {""}
    assert op_types(model.graph) <= supported, op_types(model.graph) - supported
    assert {"Conv", "ConvTranspose", "InstanceNormalization", "Selu"} <= op_types(model.graph)  # the decoder is in
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path, capsys) -> None:
    model = tiny_dissimnet()
    model.architecture = {**model.architecture, "width": 0.25}  # claims another width than its weights have
    path = tmp_path / "other.pt"
    save_model(path, model)
    out = tmp_path / "never.onnx"
    assert main(["--checkpoint", str(path), "--onnx", str(out)]) == 2
    error = capsys.readouterr().err
    assert "shape mismatch" in error and "'width': 0.25" in error
    assert not out.exists()


@pytest.mark.slow
def test_untrained_efficientnet_checkpoint_passes_the_parameter_check(tmp_path: Path) -> None:
    """Fresh BatchNorms hold equal ones and zeros, which the exporter stores once: they still count as exported."""
    torch.manual_seed(0)
    save_model(tmp_path / "lite.pt", DissimNetPrior(encoder="efficientnet_lite0"))
    graph = build_graph("dissimilarity", tmp_path / "lite.pt")
    model = export_to_proto(graph, ExportConfig(height=64, width=128))
    names = {init.name for init in model.graph.initializer}
    assert any(name.startswith("dissimilarity.") and name not in names for name, _ in graph.named_parameters())
    baseline = sum(p.numel() for p in DissimNetPrior(encoder="efficientnet_lite0").parameters())
    report = parameter_report(model, graph)
    assert report["exported_parameters_by_component"]["dissimilarity"] == baseline
    assert report["baseline_dissimnet_parameters"] == baseline and report["shared_encoder_parameters"] == 0

