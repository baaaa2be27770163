"""Export an inference graph (``image`` N x 3 x H x W RGB in [0, 1] -> one float32 output) to ONNX and verify it.

Pinned exporter: ``torch.onnx.export(dynamo=True, optimize=False)`` at opset 18.
- dynamo=True: the torch.export-based exporter is PyTorch's default since 2.9; the TorchScript exporter warns
  that it "will be removed". Opset 18 is that exporter's native opset (no version conversion) and lies inside the
  range every TensorRT 10.x parser accepts (10.0: opsets 9..20).
- optimize=False: keeps every parameter as an initializer under its PyTorch name (no Conv+BatchNorm folding), so
  the exported parameter count is checkable against the network's. ONNX Runtime (graph optimisation level ALL)
  and TensorRT fold and fuse at load time anyway, so nothing is lost at run time.

After export: ONNX checker, input/output contract, TensorRT operator check, ONNX Runtime vs PyTorch max abs
difference, then the model and a JSON sidecar are written atomically.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.export.onnx_checks import INPUT_NAME, check_io, load_supported_ops, operator_counts, tensorrt_problems
from mgcda_core.utils.atomic import atomic_write_bytes, atomic_write_json

LOG = logging.getLogger(__name__)

OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True, optimize=False)"
SIDECAR_FORMAT = "mgcda-onnx"


@dataclass(frozen=True)
class ExportConfig:
    """Shape and naming of the exported graph."""

    height: int = DEFAULT_INPUT_SIZE[0]
    width: int = DEFAULT_INPUT_SIZE[1]
    batch: int = 1
    dynamic: bool = False  # symbolic N, H, W (H and W multiples of ``multiple``)
    multiple: int = 8  # the dissimilarity network downsamples 3 times by 2
    output_name: str = "score"
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0 or self.batch <= 0:
            raise ValueError(f"export shape must be positive, got batch {self.batch}, {self.height} x {self.width}")
        if self.height % self.multiple or self.width % self.multiple:
            raise ValueError(f"export height and width must be multiples of {self.multiple}, "
                             f"got {self.height} x {self.width}")


def export_to_proto(graph: torch.nn.Module, config: ExportConfig = ExportConfig()) -> onnx.ModelProto:
    """Trace ``graph`` (in eval mode) with the pinned exporter and return the ONNX model."""
    graph = graph.eval()
    example = torch.rand(config.batch, 3, config.height, config.width, generator=torch.Generator().manual_seed(0))
    dynamic_shapes = None
    if config.dynamic:
        steps = config.multiple
        dynamic_shapes = ({
            0: torch.export.Dim("batch", min=1, max=64),
            2: steps * torch.export.Dim("height_blocks", min=max(1, 32 // steps), max=4096 // steps),
            3: steps * torch.export.Dim("width_blocks", min=max(1, 32 // steps), max=4096 // steps),
        },)
    with warnings.catch_warnings(), torch.no_grad():
        # The exporter warns about its own internals (e.g. deprecations inside torch.export); ours are checked below.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph, (example,), dynamo=True, optimize=False, opset_version=config.opset,
            input_names=[INPUT_NAME], output_names=[config.output_name], dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    model = program.model_proto
    onnx.checker.check_model(model)
    return model


def ort_session(model: onnx.ModelProto | bytes | str | Path, providers: list[str] | None = None,
                threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session with all graph optimisations on."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    if isinstance(source, Path):
        source = str(source)
    return ort.InferenceSession(source, sess_options=options, providers=providers or ["CPUExecutionProvider"])


def max_abs_difference(model: onnx.ModelProto, graph: torch.nn.Module, image: np.ndarray) -> float:
    """max |ONNX Runtime(model)(image) - graph(image)| on CPU."""
    with torch.inference_mode():
        expected = graph.eval()(torch.from_numpy(image)).float().numpy()
    (actual,) = ort_session(model).run(None, {INPUT_NAME: image})
    if actual.shape != expected.shape:
        raise ValueError(f"ONNX Runtime output shape {actual.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(actual - expected).max())


def reference_image(config: ExportConfig, seed: int = 0) -> np.ndarray:
    """The seeded float32 image used to compare runtimes at the export size."""
    rng = np.random.default_rng(seed)
    return rng.random((config.batch, 3, config.height, config.width), dtype=np.float32)


@dataclass
class ExportReport:
    """What was exported and how it checked out; also the content of the JSON sidecar."""

    onnx_path: str
    onnx_sha256: str
    opset: int
    exporter: str
    torch_version: str
    dynamic: bool
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    operators: dict[str, int]
    tensorrt_supported_ops: str  # TensorRT version of the operator list checked against
    max_abs_diff_onnxruntime_vs_torch: float
    max_abs_diff_size: list[int]
    description: dict[str, Any] = field(default_factory=dict)  # graph-specific: stages, score, parameter counts

    def to_dict(self) -> dict[str, Any]:
        return {"format": SIDECAR_FORMAT, **asdict(self)}


def sidecar_path(onnx_path: str | Path) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def export_onnx(graph: torch.nn.Module, path: str | Path, config: ExportConfig = ExportConfig(),
                description: dict[str, Any] | None = None, tolerance: float | None = 1e-4) -> ExportReport:
    """Export ``graph`` to ``path`` (+ ``path.json`` sidecar), after checking it.

    Refuses (ValueError) a model using operators TensorRT cannot parse, breaking the input/output contract, or
    differing from PyTorch by more than ``tolerance`` (None: report only). Nothing is written on refusal.
    """
    model = export_to_proto(graph, config)
    input_spec, output_spec = check_io(model, size=(config.height, config.width))
    supported = load_supported_ops()
    problems = tensorrt_problems(model, supported)
    if problems:
        raise ValueError("exported ONNX is not TensorRT-compatible: " + "; ".join(problems))
    difference = max_abs_difference(model, graph, reference_image(config))
    if tolerance is not None and not difference <= tolerance:
        raise ValueError(f"ONNX Runtime output differs from PyTorch by {difference:.3g} > tolerance {tolerance:g}")
    data = model.SerializeToString()
    report = ExportReport(
        onnx_path=str(path),
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        opset=config.opset,
        exporter=EXPORTER,
        torch_version=torch.__version__,
        dynamic=config.dynamic,
        inputs=[input_spec.to_dict()],
        outputs=[output_spec.to_dict()],
        operators=dict(sorted(operator_counts(model).items())),
        tensorrt_supported_ops=supported.tensorrt_version,
        max_abs_diff_onnxruntime_vs_torch=difference,
        max_abs_diff_size=[config.batch, 3, config.height, config.width],
        description=description or {},
    )
    atomic_write_bytes(path, data)
    atomic_write_json(sidecar_path(path), report.to_dict())
    return report
