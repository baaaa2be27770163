"""Build TensorRT engines (10.3+ and 11.x) from the exported ONNX, through the verified engine cache.

Build steps: ``trt.Builder`` -> network -> ``trt.OnnxParser`` -> builder config with a workspace limit
(``set_memory_pool_limit(WORKSPACE)``), one optimisation profile for the ``image`` input (min/opt/max shapes), a
timing cache per TensorRT version, compute capability and precision (``timing_cache``), and one precision recipe
on every supported TensorRT version (``precision_recipe``, recorded in the engine cache key):

- fp32: the ONNX as exported, weakly typed on 10.x (no precision flags: float32 kernels), and ``BuilderFlag.TF32``
  cleared: TF32 is "Enabled by default" (TensorRT API reference, BuilderFlag) and rounds convolution inputs to
  10-bit mantissas, which the 1e-4 parity bar cannot absorb.
- fp16: the ONNX converted to mixed precision (``to_mixed_precision``: float16 weights and activations, float32
  inputs/outputs and float32 for ``FP32_OPS``) and parsed into a strongly typed network
  (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``), which takes its types from the graph. TensorRT 11.x removed
  ``BuilderFlag.FP16`` and weak typing (NVIDIA's "Migrating from TensorRT 10.x to 11.x" guide; the flag is accepted
  and ignored there since strong typing is always on); 10.x has supported strongly typed networks since 10.0. Using
  the same path on both gives the same float16/float32 split on a Jetson (10.3) and on an 11.x desktop.

Import of ``tensorrt`` is deferred: everything else in the package works without it. Device identity and
selection use cuda-python (``mgcda_core.utils.cuda_memory``), so no CUDA build of PyTorch is needed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from mgcda_core.export.engine_cache import CachedEngine, EngineCache, EngineKey, Shape
from mgcda_core.export.onnx_checks import check_tensorrt_compatible
from mgcda_core.export.tensorrt_versions import check_minimum_version, supported_ops_for
from mgcda_core.export.timing_cache import (
    attach_timing_cache,
    discard_timing_cache,
    save_timing_cache,
    timing_cache_path,
)
from mgcda_core.graph_io import INPUT_NAME, check_io
from mgcda_core.utils import cuda_memory

LOG = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30
MIN_DYNAMIC_SIZE = 32  # smallest H and W of a dynamic engine's profile (the perceptual pyramid's stride)

# Kept in float32 by the fp16 recipe: reductions, normalisations and exponentials whose range or accumulated
# error does not fit float16 (entropy, softmax, per-image min/max normalisation). BatchNormalization is not among
# them: in inference it is a per-channel affine map that TensorRT fuses into the preceding convolution, and keeping
# it in float32 put two Casts around each of the default graph's 67 BatchNorms.
FP32_OPS = (
    "Softmax", "LogSoftmax", "Log", "Exp", "Pow", "Sqrt", "Div", "Reciprocal",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceLogSumExp",
    "InstanceNormalization", "TopK", "ArgMax", "Resize",
)
# Bumped whenever the build recipe changes in a way ``precision_recipe`` does not already spell out.
RECIPE_REVISION = 2


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, or an ImportError saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise ImportError(f"TensorRT is not installed ({error}); see docs/DEPLOYMENT.md: the tensorrt wheel for "
                          "your CUDA on a desktop, JetPack's python3-libnvinfer (venv with --system-site-packages) "
                          "on Jetson") from error
    return tensorrt


def fp32_op_types() -> list[str]:
    """Every op type the fp16 conversion keeps in float32: ``FP32_OPS`` and ONNX Runtime's own block list."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))


def precision_recipe(precision: str) -> str:
    """How ``precision`` is built, as recorded in the engine cache key: a changed recipe never reuses an engine."""
    if precision == "fp32":
        return f"r{RECIPE_REVISION} fp32: ONNX as exported, TF32 off"
    if precision == "fp16":
        kept = fp32_op_types()
        digest = hashlib.sha256(",".join(kept).encode("utf-8")).hexdigest()[:12]
        return (f"r{RECIPE_REVISION} fp16: float16 ONNX conversion with float32 I/O and {len(kept)} float32 op "
                f"types ({digest}), strongly typed")
    raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")


def network_flags(trt: ModuleType, precision: str) -> int:
    """``create_network`` flags: strongly typed for the fp16 recipe, default (weakly typed on 10.x) for fp32."""
    if precision != "fp16":
        return 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    # Absent only if a later release drops the deprecated flag, when strong typing is the only mode anyway.
    return 0 if strongly_typed is None else 1 << int(strongly_typed)


def set_precision_flags(trt: ModuleType, builder_config: Any, precision: str) -> None:
    """fp32: clear TF32 (on by default). fp16: nothing, the strongly typed network carries the types."""
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32 is not None:
        builder_config.clear_flag(tf32)


def to_mixed_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 copy of ``model`` with float32 inputs/outputs and float32 ``fp32_op_types()`` (Casts at the edges).

    Uses ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``), already a dependency;
    NVIDIA's ModelOpt AutoCast does the same job where installed and its output can be passed as --onnx.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=fp32_op_types())
    # The converter appends its input Casts at the end of the node list; ONNX requires topological order.
    wrapper = OnnxModel(converted)
    wrapper.topological_sort()
    converted = wrapper.model
    onnx.checker.check_model(converted)
    return converted


@dataclass(frozen=True)
class BuildConfig:
    """How to build: precision, optimisation profile for ``image``, workspace and timing cache directory."""

    precision: str = "fp32"
    min_shape: Shape = (1, 3, 256, 512)
    opt_shape: Shape = (1, 3, 256, 512)
    max_shape: Shape = (1, 3, 256, 512)
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    timing_cache_dir: Path | None = None  # holds one file per TensorRT version, compute capability and precision

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        shapes = (self.min_shape, self.opt_shape, self.max_shape)
        if any(len(s) != 4 or s[1] != 3 for s in shapes):
            raise ValueError(f"profile shapes must be N x 3 x H x W, got {shapes}")
        if not all(a <= b <= c for a, b, c in zip(*shapes)):
            raise ValueError(f"profile needs min <= opt <= max in every dimension, got {shapes}")
        if self.workspace_bytes <= 0:
            raise ValueError(f"workspace_bytes must be positive, got {self.workspace_bytes}")

    @property
    def profile(self) -> tuple[Shape, Shape, Shape]:
        return (tuple(self.min_shape), tuple(self.opt_shape), tuple(self.max_shape))


def profile_for(model: onnx.ModelProto, height: int, width: int,
                max_height: int | None = None, max_width: int | None = None) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) input shapes: the model's fixed shape, or for dynamic H/W a profile up to the maxima."""
    spec, _ = check_io(model)
    batch = spec.shape[0] if isinstance(spec.shape[0], int) else 1
    fixed = [isinstance(d, int) for d in spec.shape[2:]]
    if all(fixed):
        shape = (batch, 3, int(spec.shape[2]), int(spec.shape[3]))
        return shape, shape, shape
    smallest = (batch, 3, MIN_DYNAMIC_SIZE, MIN_DYNAMIC_SIZE)
    opt = (batch, 3, height, width)
    largest = (batch, 3, max_height or height, max_width or width)
    return smallest, opt, largest


def build_serialized_engine(onnx_bytes: bytes, config: BuildConfig, timing_cache: Path | None = None) -> bytes:
    """Parse ``onnx_bytes`` and build a serialized engine with ``config`` (needs TensorRT and a GPU).

    ``timing_cache``: the timing cache file to load and update (see ``timing_cache_path``), or None.
    """
    trt = import_tensorrt()
    check_minimum_version(trt.__version__)
    model = onnx.load_from_string(onnx_bytes)
    check_io(model)
    check_tensorrt_compatible(model, supported_ops_for(trt.__version__))
    if config.precision == "fp16":
        onnx_bytes = to_mixed_precision(model).SerializeToString()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, config.precision))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT's ONNX parser refused the model: " + " | ".join(errors))
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    set_precision_flags(trt, builder_config, config.precision)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *config.profile)
    builder_config.add_optimization_profile(profile)
    loaded = attach_timing_cache(builder_config, timing_cache)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None and loaded:
        # A cache TensorRT accepted can still hold timings it cannot use: one more try without it.
        LOG.warning("TensorRT build failed with timing cache %s: discarded, building once more without it",
                    timing_cache)
        discard_timing_cache(timing_cache)
        attach_timing_cache(builder_config, None)
        serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    save_timing_cache(builder_config, timing_cache)
    return bytes(serialized)


def engine_key(onnx_bytes: bytes, config: BuildConfig, tensorrt_version: str, gpu_name: str,
               capability: str) -> EngineKey:
    """The cache key of building ``onnx_bytes`` with ``config`` by TensorRT ``tensorrt_version`` on this GPU."""
    return EngineKey(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=config.precision,
        recipe=precision_recipe(config.precision),
        input_shape=config.profile,
    )


def build_engine_cached(onnx_path: str | Path, cache_dir: str | Path, config: BuildConfig,
                        device: str = "cuda:0") -> tuple[CachedEngine, EngineKey]:
    """The engine for ``onnx_path`` from ``cache_dir``, built (and cached) when absent or not verifiable, and its
    cache key."""
    trt = import_tensorrt()
    onnx_bytes = Path(onnx_path).read_bytes()
    gpu_name, capability = cuda_memory.device_identity(device)
    key = engine_key(onnx_bytes, config, trt.__version__, gpu_name, capability)
    timing = (timing_cache_path(config.timing_cache_dir, trt.__version__, capability, config.precision)
              if config.timing_cache_dir is not None else None)
    cuda_memory.use_device(device)
    cached = EngineCache(cache_dir).get_or_build(key, lambda: build_serialized_engine(onnx_bytes, config, timing))
    return cached, key
