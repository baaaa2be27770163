"""Export an inference graph (``image`` N x 3 x H x W RGB in [0, 1] -> one float32 output) to ONNX and verify it.

Pinned exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)`` at opset 17, with
``training=PRESERVE`` and ``do_constant_folding=False``.
- Why TorchScript and not ``dynamo=True``: on this pipeline it exports ~5x faster (ESPNetv2 default graph: ~7 s
  vs 35 s of CPU; the dynamo path spends most of it in torch.export tracing and decompositions), which keeps
  export usable inside tests, CI and node start-up, and its graph is smaller (891 vs 2158 nodes, no CastLike).
  Both were checked here: all operators in the TensorRT list, ONNX Runtime within 8.4e-5 of PyTorch on the
  default graph. Risk: PyTorch marks the TorchScript exporter deprecated ("will be removed"); requirements pin
  torch 2.14.1, and switching is this one function.
- Opset 17 lies inside every TensorRT parser's range from 8.5 (JetPack 5) through 10.x (10.0: 9..20) and 11.x.
- PRESERVE + no constant folding: keeps every parameter as an initializer under its PyTorch name (no Conv+BatchNorm
  folding), so the exported parameter count is checkable against the network's. ONNX Runtime (graph optimisation
  level ALL) and TensorRT fold and fuse at load time anyway, so nothing is lost at run time.

After export: ONNX checker, input/output contract, TensorRT operator check, ONNX Runtime vs PyTorch max abs
difference, then the model and a JSON sidecar are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from tqdm import tqdm

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.export.onnx_checks import (
    INPUT_NAME,
    check_io,
    check_tensorrt_compatible,
    load_supported_ops,
    operator_counts,
)
from mgcda_core.runtime.onnx_runtime import OnnxRuntime
from mgcda_core.utils.atomic import atomic_write_bytes, atomic_write_json

LOG = logging.getLogger(__name__)

OPSET = 17
EXPORTER = "torch.onnx.export(dynamo=False, training=PRESERVE, do_constant_folding=False)"
SIDECAR_FORMAT = "mgcda-onnx"


@dataclass(frozen=True)
class ExportConfig:
    """Shape and naming of the exported graph."""

    height: int = DEFAULT_INPUT_SIZE[0]
    width: int = DEFAULT_INPUT_SIZE[1]
    batch: int = 1
    dynamic: bool = False  # symbolic N, H, W (H and W multiples of ``multiple``)
    multiple: int = 32  # ESPNetv2 needs multiples of 16, the EfficientNet-Lite0 perceptual pyramid of 32
    output_name: str = "score"
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0 or self.batch <= 0:
            raise ValueError(f"export shape must be positive, got batch {self.batch}, {self.height} x {self.width}")
        if self.height % self.multiple or self.width % self.multiple:
            raise ValueError(f"export height and width must be multiples of {self.multiple}, "
                             f"got {self.height} x {self.width}")


@contextmanager
def symbolic_shapes(graph: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Set ``symbolic_shapes`` on every submodule that has that flag (ESPNetv2's pyramid pools) while inside.

    Such modules do shape arithmetic in Python ints by default (faster, but the tracer freezes it); with the flag
    they compute it from traced shapes so that a dynamic export generalises. Restored on exit.
    """
    flagged = [module for module in graph.modules() if isinstance(getattr(module, "symbolic_shapes", None), bool)]
    previous = [module.symbolic_shapes for module in flagged]
    try:
        for module in flagged:
            module.symbolic_shapes = enabled
        yield
    finally:
        for module, value in zip(flagged, previous):
            module.symbolic_shapes = value


def export_to_proto(graph: torch.nn.Module, config: ExportConfig = ExportConfig()) -> onnx.ModelProto:
    """Trace ``graph`` (in eval mode) with the pinned exporter and return the checked ONNX model.

    A dynamic export traces with ``symbolic_shapes`` on (shape arithmetic recorded as ONNX shape ops); a fixed
    one with it off (constant sizes: plain AveragePool/Gather where the pooling bins allow, fastest in TensorRT).
    """
    graph = graph.eval()
    example = torch.rand(config.batch, 3, config.height, config.width, generator=torch.Generator().manual_seed(0))
    dynamic_axes = None
    if config.dynamic:
        dynamic_axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                        config.output_name: {0: "batch", 2: "height", 3: "width"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), symbolic_shapes(graph, config.dynamic):
        # The TorchScript exporter announces its own deprecation on every call; the choice is documented above.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (example,), buffer, dynamo=False, opset_version=config.opset, export_params=True,
            # PRESERVE exports the eval-mode graph without the eval "peephole" pass that folds BatchNorm into
            # Conv (and renames the weights); no constant folding for the same reason. ORT/TensorRT fold at load.
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
            input_names=[INPUT_NAME], output_names=[config.output_name], dynamic_axes=dynamic_axes,
        )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    return model


def compare_with_torch(model: onnx.ModelProto, graph: torch.nn.Module, image: np.ndarray) -> tuple[float, float]:
    """(max |ONNX Runtime(model)(image) - graph(image)|, max |graph(image)|) on CPU."""
    with torch.inference_mode():
        expected = graph.eval()(torch.from_numpy(image)).float().numpy()
    actual = OnnxRuntime(model, "cpu").run(image)
    if actual.shape != expected.shape:
        raise ValueError(f"ONNX Runtime output shape {actual.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def fp32_noise_floor(graph: torch.nn.Module, image: np.ndarray) -> float:
    """max |graph(image) with oneDNN convolutions - graph(image) with PyTorch's native ones| on CPU.

    How far two correct float32 implementations inside PyTorch itself disagree on this input: the noise floor
    below which no runtime can be expected to match. Deep networks with InstanceNorm (the SPADE decoder of a
    randomly initialised DissimNetPrior) amplify rounding so that it exceeds 1e-4.
    """
    tensor = torch.from_numpy(image)
    with torch.inference_mode():
        graph = graph.eval()
        reference = graph(tensor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the flag setter warns about Intel-GPU TF32, irrelevant here
            with torch.backends.mkldnn.flags(enabled=False):
                native = graph(tensor)
    return float((reference - native).abs().max())


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
    output_max_abs: float  # max |PyTorch output|: the tolerance is 1e-4 x max(1, this)
    noise_floor: float | None  # fp32_noise_floor, measured only when the difference exceeds the tolerance
    description: dict[str, Any] = field(default_factory=dict)  # graph-specific: stages, score, parameter counts

    def to_dict(self) -> dict[str, Any]:
        return {"format": SIDECAR_FORMAT, **asdict(self)}


def sidecar_path(onnx_path: str | Path) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


NOISE_FACTOR = 3.0


def check_agreement(model: onnx.ModelProto, graph: torch.nn.Module, image: np.ndarray,
                    tolerance: float | None) -> tuple[float, float, float | None]:
    """(max abs difference ONNX Runtime vs PyTorch, max |PyTorch output|, noise floor if it had to be measured).

    Passes when the difference is within ``tolerance`` times max(1, max |output|): absolute for probabilities and
    normalised maps, relative for outputs of larger scale (logits, max-logit scores reach ~20, where float32
    summation order alone moves them by ~1e-4). Otherwise it must be within ``NOISE_FACTOR`` times the graph's
    float32 noise floor, else ValueError.
    """
    (difference, scale), noise = compare_with_torch(model, graph, image), None
    allowed = None if tolerance is None else tolerance * max(1.0, scale)
    if allowed is not None and not difference <= allowed:
        noise = fp32_noise_floor(graph, image)
        if not difference <= NOISE_FACTOR * noise:
            raise ValueError(f"ONNX Runtime output differs from PyTorch by {difference:.3g} at {list(image.shape)}, "
                             f"above the tolerance {allowed:.3g} ({tolerance:g} x max(1, |output| {scale:.3g})) "
                             f"and {NOISE_FACTOR:g}x the graph's float32 noise floor {noise:.3g}")
        LOG.warning("ONNX Runtime differs from PyTorch by %.3g > %.3g, within %gx the graph's float32 noise floor "
                    "%.3g", difference, allowed, NOISE_FACTOR, noise)
    return difference, scale, noise


def check_dynamic(model: onnx.ModelProto, graph: torch.nn.Module, config: ExportConfig,
                  tolerance: float | None) -> dict[str, Any]:
    """Agreement at a second shape (batch + 1, H + multiple, W + 2 multiple) of a dynamic export.

    The tracer records shape arithmetic done with Python ints as constants; this shows whether the symbolic
    dimensions really generalise, and refuses (ValueError) when they do not.
    """
    other = ExportConfig(height=config.height + config.multiple, width=config.width + 2 * config.multiple,
                         batch=config.batch + 1, multiple=config.multiple)
    try:
        difference, _, _ = check_agreement(model, graph, reference_image(other), tolerance)
    except Exception as error:  # ONNX Runtime raises its own types for shape mismatches
        raise ValueError(f"the --dynamic export does not generalise: at {other.batch}x3x{other.height}x"
                         f"{other.width} {error}. Export a fixed size instead.") from None
    return {"size": [other.batch, 3, other.height, other.width], "max_abs_diff": difference}


def export_onnx(graph: torch.nn.Module, path: str | Path, config: ExportConfig = ExportConfig(),
                describe: Callable[[onnx.ModelProto], dict[str, Any]] | None = None,
                tolerance: float | None = 1e-4, progress: bool = False) -> ExportReport:
    """Export ``graph`` to ``path`` (+ ``path.json`` sidecar), after checking it.

    Refuses (ValueError) a model using operators TensorRT cannot parse, breaking the input/output contract, or
    differing from PyTorch by more than ``tolerance`` and more than ``NOISE_FACTOR`` times the graph's float32
    noise floor on the same input (``fp32_noise_floor``); None: report only. ``describe(model)`` adds graph-specific
    facts to the sidecar and may refuse by raising. Nothing is written on refusal. ``progress`` shows a tqdm bar
    over the steps.
    """
    with tqdm(total=5 if config.dynamic else 4, desc="export", disable=not progress, leave=False) as steps:
        model = export_to_proto(graph, config)
        steps.update()
        steps.set_description("checks")
        input_spec, output_spec = check_io(model, size=(config.height, config.width))
        supported = load_supported_ops()
        check_tensorrt_compatible(model, supported)
        description = describe(model) if describe else {}
        steps.update()
        steps.set_description("ONNX Runtime vs PyTorch")
        difference, scale, noise = check_agreement(model, graph, reference_image(config), tolerance)
        steps.update()
        if config.dynamic:
            description = {**description, "dynamic_check": check_dynamic(model, graph, config, tolerance)}
            steps.update()
        steps.set_description("write")
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
            output_max_abs=scale,
            noise_floor=noise,
            description=description,
        )
        atomic_write_bytes(path, data)
        atomic_write_json(sidecar_path(path), report.to_dict())
        steps.update()
    return report
