"""Build TensorRT engines (10.x and 11.x) from the exported ONNX, through the verified engine cache.

Build steps: ``trt.Builder`` -> network (explicit batch is implicit since 10.0) -> ``trt.OnnxParser`` -> builder
config with a workspace limit (``set_memory_pool_limit(WORKSPACE)``), one optimisation profile for the ``image``
input (min/opt/max shapes), a timing cache loaded from and saved to disk, and precision:

- fp32: nothing to set.
- fp16 on TensorRT 10.x (``BuilderFlag.FP16`` exists): weakly typed network + ``BuilderFlag.FP16``; TensorRT picks
  fp16 kernels where it deems them accurate.
- fp16 on TensorRT 11.x (the flag and all weak typing are gone): the ONNX itself is converted to mixed precision
  (``to_mixed_precision``: float16 weights and activations, float32 inputs/outputs and float32 for the numerically
  sensitive ops in ``FP32_OPS``) and parsed into a strongly typed network, which takes its types from the graph.

Import of ``tensorrt`` is deferred: everything else in the package works without it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import onnx

from mgcda_core.export.engine_cache import CachedEngine, EngineCache, EngineKey, Shape
from mgcda_core.export.onnx_checks import check_tensorrt_compatible
from mgcda_core.graph_io import INPUT_NAME, check_io
from mgcda_core.utils.atomic import atomic_write_bytes

LOG = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 1 << 30
MIN_DYNAMIC_SIZE = 32  # smallest H and W of a dynamic engine's profile (the perceptual pyramid's stride)

# Kept in float32 by the 11.x mixed-precision conversion: reductions, normalisations and exponentials whose
# range or accumulated error does not fit float16 (entropy, softmax, per-image min/max normalisation).
FP32_OPS = (
    "Softmax", "LogSoftmax", "Log", "Exp", "Pow", "Sqrt", "Div", "Reciprocal",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceLogSumExp",
    "InstanceNormalization", "BatchNormalization", "TopK", "ArgMax", "Resize",
)


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, or an ImportError saying how to get it."""
    try:
        import tensorrt
    except ImportError as error:
        raise ImportError(f"TensorRT is not installed ({error}); install the tensorrt wheel matching your CUDA, "
                          "or on Jetson use the JetPack python3-libnvinfer package") from error
    return tensorrt


def cuda_device_identity(device: str = "cuda:0") -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of ``device``, from PyTorch's CUDA runtime."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("TensorRT needs a CUDA GPU, but PyTorch sees none (torch.cuda.is_available() is False)")
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"


def fp16_strategy(trt: ModuleType) -> str:
    """"builder_flag" where ``BuilderFlag.FP16`` exists (TensorRT 10.x), else "strongly_typed" (11.x)."""
    return "builder_flag" if hasattr(trt.BuilderFlag, "FP16") else "strongly_typed"


def to_mixed_precision(model: onnx.ModelProto) -> onnx.ModelProto:
    """Float16 copy of ``model`` with float32 inputs/outputs and float32 ``FP32_OPS`` (Cast nodes at the edges).

    Uses ONNX Runtime's float16 converter (``onnxruntime.transformers.float16``), already a dependency;
    NVIDIA's ModelOpt AutoCast does the same job where installed and its output can be passed as --onnx.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
    )
    # The converter appends its input Casts at the end of the node list; ONNX requires topological order.
    wrapper = OnnxModel(converted)
    wrapper.topological_sort()
    converted = wrapper.model
    onnx.checker.check_model(converted)
    return converted


@dataclass(frozen=True)
class BuildConfig:
    """How to build: precision, optimisation profile for ``image``, workspace and timing cache."""

    precision: str = "fp32"
    min_shape: Shape = (1, 3, 256, 512)
    opt_shape: Shape = (1, 3, 256, 512)
    max_shape: Shape = (1, 3, 256, 512)
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    timing_cache: Path | None = None

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


def build_serialized_engine(onnx_bytes: bytes, config: BuildConfig) -> bytes:
    """Parse ``onnx_bytes`` and build a serialized engine with ``config`` (needs TensorRT and a GPU)."""
    trt = import_tensorrt()
    model = onnx.load_from_string(onnx_bytes)
    check_io(model)
    check_tensorrt_compatible(model)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = config.precision == "fp16" and fp16_strategy(trt) == "strongly_typed"
    if strongly_typed:
        onnx_bytes = to_mixed_precision(model).SerializeToString()
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError("TensorRT's ONNX parser refused the model: " + " | ".join(errors))
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    if config.precision == "fp16" and not strongly_typed:
        builder_config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *config.profile)
    builder_config.add_optimization_profile(profile)
    cache_bytes = b""
    if config.timing_cache is not None and config.timing_cache.is_file():
        cache_bytes = config.timing_cache.read_bytes()
    timing_cache = builder_config.create_timing_cache(cache_bytes)
    # A timing cache from another TensorRT/GPU is ignored (rebuilt) rather than trusted.
    builder_config.set_timing_cache(timing_cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    if config.timing_cache is not None:
        atomic_write_bytes(config.timing_cache, bytes(builder_config.get_timing_cache().serialize()))
    return bytes(serialized)


def engine_key(onnx_bytes: bytes, config: BuildConfig, device: str = "cuda:0") -> EngineKey:
    """The cache key of building ``onnx_bytes`` with ``config`` on this machine's ``device``."""
    trt = import_tensorrt()
    gpu_name, capability = cuda_device_identity(device)
    return EngineKey(
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        precision=config.precision,
        input_shape=config.profile,
    )


def build_engine_cached(onnx_path: str | Path, cache_dir: str | Path, config: BuildConfig,
                        device: str = "cuda:0") -> CachedEngine:
    """The engine for ``onnx_path`` from ``cache_dir``; built (and cached) when absent or not verifiable."""
    onnx_bytes = Path(onnx_path).read_bytes()
    key = engine_key(onnx_bytes, config, device)
    import torch

    with torch.cuda.device(torch.device(device)):
        return EngineCache(cache_dir).get_or_build(key, lambda: build_serialized_engine(onnx_bytes, config))
