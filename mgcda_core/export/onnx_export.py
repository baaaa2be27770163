"""Export an inference graph (``image`` N x 3 x H x W RGB in [0, 1] -> one float32 output) to ONNX and verify it.

Pinned exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)`` at opset 17, with
``training=PRESERVE`` and ``do_constant_folding=False``.
- Why TorchScript and not ``dynamo=True``: on this pipeline it exports ~5x faster (ESPNetv2 default graph: ~7 s
  vs 35 s of CPU; the dynamo path spends most of it in torch.export tracing and decompositions), which keeps
  export usable inside tests, CI and node start-up, and its graph is smaller (891 vs 2158 nodes, no CastLike).
  Both were checked: all operators in the TensorRT list, ONNX Runtime within float32 rounding of PyTorch
  (``check_agreement``) on the default graph. Risk: PyTorch marks the TorchScript exporter deprecated ("will be removed"); requirements pin
  torch 2.14.1, and switching is this one function.
- Opset 17 lies inside every TensorRT parser's range from 8.5 (JetPack 5) through 10.x (10.0: 9..20) and 11.x.
- PRESERVE + no constant folding: keeps every parameter as an initializer under its PyTorch name (no Conv+BatchNorm
  folding), so the exported parameter count is checkable against the network's. ONNX Runtime (graph optimisation
  level ALL) and TensorRT fold and fuse at load time anyway, so nothing is lost at run time.

After export: ONNX checker, input/output contract, TensorRT operator check, ONNX Runtime vs PyTorch max abs
difference held to what float32 rounding explains (``check_agreement``), then the model and a JSON sidecar (which
reports that difference) are written atomically.
"""

from __future__ import annotations

import copy
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
import onnxruntime as ort
import torch
from torch.overrides import TorchFunctionMode
from tqdm import tqdm

from mgcda_core.constants import DEFAULT_INPUT_SIZE
from mgcda_core.export.cpu_rewrites import for_cpu
from mgcda_core.export.onnx_checks import check_tensorrt_compatible, load_supported_ops, operator_counts
from mgcda_core.graph_io import INPUT_NAME, check_io
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
            setattr(module, "symbolic_shapes", enabled)  # noqa: B010 (an attribute of some submodules only)
        yield
    finally:
        for module, value in zip(flagged, previous):
            setattr(module, "symbolic_shapes", value)  # noqa: B010


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
        # torch.onnx.export is documented to take a file-like object; its type hint omits it.
        torch.onnx.export(
            graph, (example,),
            buffer,  # type: ignore[arg-type]
            dynamo=False, opset_version=config.opset, export_params=True,
            # PRESERVE exports the eval-mode graph without the eval "peephole" pass that folds BatchNorm into
            # Conv (and renames the weights); no constant folding for the same reason. ORT/TensorRT fold at load.
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
            input_names=[INPUT_NAME], output_names=[config.output_name], dynamic_axes=dynamic_axes,
        )
    model = onnx.load_from_string(buffer.getvalue())
    drop_trailing_empty_inputs(model)
    onnx.checker.check_model(model)
    return model


def drop_trailing_empty_inputs(model: onnx.ModelProto) -> None:
    """Remove optional inputs given as "" at the end of a node's input list (the ONNX spelling of "absent").

    Same graph: a trailing empty input and a missing one mean the same. The exporter writes F.pad's constant
    value that way, and ONNX Runtime's Pad-into-Conv fusion then leaves the Pad alone: the EfficientNet-Lite0
    stride-2 blocks' SAME padding stays a separate copy of the feature map (measured: 9 ms of 131 ms, the
    default real-time graph at 256x512, 2 threads).
    """
    for node in model.graph.node:
        while node.input and node.input[-1] == "":
            node.input.pop()


# ONNX Runtime's CPU kernels trade accuracy for speed (MLAS's vectorised exp/tanh/logistic approximations, fused
# normalisations, other blocking): measured 11x PyTorch's own float32 error on the test checkpoint's full graph
# (3.44e-4 vs e = 3.1e-5, AVX-512 EPYC). 32 leaves a factor of 3 for other CPUs and kernel versions and still
# refuses a 0.1 % weight error or a wrong activation (test_export_checks.py, test_export_checkpoint.py).
NOISE_FACTOR = 32.0


@dataclass(frozen=True)
class Agreement:
    """ONNX Runtime against PyTorch on one input, and the bound the difference was held to (see ``check_agreement``)."""

    max_abs_diff: float  # max |ONNX Runtime output - PyTorch float32 output|
    output_max_abs: float  # max |PyTorch float32 output|
    float32_error: float  # max |PyTorch float32 output - the same graph in float64|
    allowed: float  # the bound on max_abs_diff


class _Decisions(TorchFunctionMode):
    """Records the discrete choices a forward pass makes (``argmax``, and the indices of ``max``/``min`` along a
    dimension), or replays recorded ones in the same order.

    Replaying the float32 run's choices in the float64 run keeps both on the same branch: at a pixel whose two
    best classes are within rounding of each other, float64 could pick the other class, and the output difference
    there would measure a different segmentation rather than float32 rounding.
    """

    def __init__(self, recorded: list[torch.Tensor] | None = None) -> None:
        super().__init__()
        self.replay = recorded is not None
        self.choices: list[torch.Tensor] = list(recorded) if recorded is not None else []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
        # max/min of two tensors (elementwise) or of all elements choose nothing that later code indexes with
        if name not in ("argmax", "max", "min") or (name != "argmax" and not isinstance(dim, int)):
            return func(*args, **kwargs)
        if not self.replay:
            result = func(*args, **kwargs)
            self.choices.append(result if name == "argmax" else result.indices)
            return result
        index = self.choices.pop(0)
        if name == "argmax":
            return index
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        gathered = args[0].gather(dim, index if keepdim else index.unsqueeze(dim))
        values = gathered if keepdim else gathered.squeeze(dim)
        return (torch.return_types.max if name == "max" else torch.return_types.min)((values, index))


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def float32_error(graph: torch.nn.Module, image: np.ndarray) -> tuple[np.ndarray, float]:
    """(``graph(image)`` in float32, max |that - the same graph evaluated in float64|) on CPU.

    The float64 evaluation (parameters, buffers, input and default dtype in float64; the float32 run's discrete
    choices, see ``_Decisions``) stands for the exact result: its own rounding is 2^29 times finer than float32's.
    The difference is the rounding error float32 arithmetic leaves in this graph's output on this input, amplified
    by whatever the graph amplifies (a randomly initialised SPADE decoder with eight InstanceNorms takes it far
    above a plain network's).
    """
    tensor = torch.from_numpy(image)
    with torch.inference_mode():
        with _Decisions() as decisions:
            single = graph.eval()(tensor).float().numpy()
        with _default_dtype(torch.float64), _Decisions(decisions.choices):
            double = copy.deepcopy(graph).double()(tensor.double()).numpy()
    return single, float(np.abs(single.astype(np.float64) - double).max())


def allowed_difference(expected: np.ndarray, error: float, noise_factor: float = NOISE_FACTOR) -> float:
    """How far another float32 implementation of a graph may be from PyTorch's output ``expected``, whose own
    float32 error (``float32_error``) is ``error``.

    Both results lie within their rounding error of the exact value, so they differ by at most the sum of the two
    errors. The other implementation (ONNX Runtime, TensorRT fp32: other accumulation order and blocking,
    Conv+BatchNorm folded, vectorised exp/tanh) may be less accurate than PyTorch, up to ``noise_factor`` - 1 times
    (``NOISE_FACTOR``, explained where it is defined): the bound is ``noise_factor`` x ``error``. On the test
    checkpoint's graph at 256x512, ONNX Runtime on an AVX-512 CPU was 3.4e-4 from PyTorch, whose float32 error on
    the dissimilarity network alone is 1.2e-4 (docs/DEPLOYMENT.md): about three times. The factor leaves room for
    other CPUs' kernels; a real mismatch (a weight 0.1 % off, a wrong operator) lands orders of magnitude above.
    One float32 spacing at the output's largest magnitude is added to ``error``, so that a graph PyTorch computes
    exactly (``error`` 0: copies, comparisons) still leaves room for the last rounding of another kernel.
    ``error`` is measured on the same input, so the bound follows the graph's conditioning on every CPU.
    """
    return noise_factor * (error + float(np.spacing(np.float32(np.abs(expected).max()))))


def check_agreement(model: onnx.ModelProto, graph: torch.nn.Module, image: np.ndarray) -> Agreement:
    """Run ``model`` with ONNX Runtime (CPU, default session options: all graph optimisations, and the CPU runtime's
    rewrites of ``cpu_rewrites``) and ``graph`` with
    PyTorch on ``image``; ValueError when they differ by more than float32 rounding explains (``allowed_difference``).

    A real mismatch (a changed weight, a wrong operator) moves the output by far more than that.
    """
    expected, error = float32_error(graph, image)
    # As the CPU runtime runs it: with the CPU rewrites, so that the check covers them too.
    session = ort.InferenceSession(for_cpu(model).SerializeToString(), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {INPUT_NAME: image})
    if actual.shape != expected.shape:
        raise ValueError(f"ONNX Runtime output shape {actual.shape} differs from PyTorch's {expected.shape}")
    scale, allowed = float(np.abs(expected).max()), allowed_difference(expected, error)
    difference = float(np.abs(actual - expected).max())
    if not difference <= allowed:
        raise ValueError(f"ONNX Runtime output differs from PyTorch by {difference:.3g} at {list(image.shape)}, "
                         f"above the {allowed:.3g} that float32 rounding explains ({NOISE_FACTOR:g} x (PyTorch's "
                         f"float32 error {error:.3g} + one float32 spacing at |output| {scale:.3g})): the exported "
                         "graph computes something else")
    return Agreement(difference, scale, error, allowed)


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
    output_max_abs: float  # max |PyTorch output|
    float32_error: float  # max |PyTorch float32 - float64| on the same input (``float32_error``)
    max_abs_diff_allowed: float  # the bound the difference was held to (``check_agreement``)
    description: dict[str, Any] = field(default_factory=dict)  # graph-specific: stages, score, parameter counts

    def to_dict(self) -> dict[str, Any]:
        return {"format": SIDECAR_FORMAT, **asdict(self)}


def sidecar_path(onnx_path: str | Path) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def check_dynamic(model: onnx.ModelProto, graph: torch.nn.Module, config: ExportConfig) -> dict[str, Any]:
    """Agreement at a second shape (batch + 1, H + multiple, W + 2 multiple) of a dynamic export.

    The tracer records shape arithmetic done with Python ints as constants; this shows whether the symbolic
    dimensions really generalise, and refuses (ValueError) when they do not.
    """
    other = ExportConfig(height=config.height + config.multiple, width=config.width + 2 * config.multiple,
                         batch=config.batch + 1, multiple=config.multiple)
    try:
        agreement = check_agreement(model, graph, reference_image(other))
    except Exception as error:  # ONNX Runtime raises its own types for shape mismatches
        raise ValueError(f"the --dynamic export does not generalise: at {other.batch}x3x{other.height}x"
                         f"{other.width} {error}. Export a fixed size instead.") from None
    return {"size": [other.batch, 3, other.height, other.width], "max_abs_diff": agreement.max_abs_diff,
            "max_abs_diff_allowed": agreement.allowed}


def export_onnx(graph: torch.nn.Module, path: str | Path, config: ExportConfig = ExportConfig(),
                describe: Callable[[onnx.ModelProto], dict[str, Any]] | None = None,
                progress: bool = False) -> ExportReport:
    """Export ``graph`` to ``path`` (+ ``path.json`` sidecar), after checking it.

    Refuses (ValueError) a model using operators TensorRT cannot parse, breaking the input/output contract, or
    differing from PyTorch under ONNX Runtime by more than float32 arithmetic explains (``check_agreement``; the
    max abs difference is reported in the sidecar). ``describe(model)`` adds graph-specific
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
        agreement = check_agreement(model, graph, reference_image(config))
        steps.update()
        if config.dynamic:
            description = {**description, "dynamic_check": check_dynamic(model, graph, config)}
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
            max_abs_diff_onnxruntime_vs_torch=agreement.max_abs_diff,
            max_abs_diff_size=[config.batch, 3, config.height, config.width],
            output_max_abs=agreement.output_max_abs,
            float32_error=agreement.float32_error,
            max_abs_diff_allowed=agreement.allowed,
            description=description,
        )
        atomic_write_bytes(path, data)
        atomic_write_json(sidecar_path(path), report.to_dict())
        steps.update()
    return report
