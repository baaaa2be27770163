"""TensorRT build decisions, run against a stand-in ``tensorrt`` module (TensorRT cannot run on these machines):
flags and network type per version and precision, the precision recipe in the cache key, the minimum version,
the operator check per version, timing caches keyed per version/GPU/precision and recovered when refused.
The real builds are in test_runtime_backends.py and skip without a GPU."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from tensorrt_stand_in import StandIn

from mgcda_core.export import tensorrt_builder
from mgcda_core.export.engine_cache import EngineCache
from mgcda_core.export.onnx_checks import load_supported_ops
from mgcda_core.export.onnx_export import ExportConfig, export_to_proto
from mgcda_core.export.tensorrt_builder import (
    BuildConfig,
    build_serialized_engine,
    engine_key,
    fp32_op_types,
    precision_recipe,
    to_mixed_precision,
)
from mgcda_core.export.tensorrt_versions import OPERATORS_ADDED, parse_version, supported_ops_for
from mgcda_core.export.timing_cache import timing_cache_path

SHAPE = (1, 3, 32, 64)
CONFIG = {"fp32": BuildConfig(min_shape=SHAPE, opt_shape=SHAPE, max_shape=SHAPE),
          "fp16": BuildConfig(precision="fp16", min_shape=SHAPE, opt_shape=SHAPE, max_shape=SHAPE)}
LOGGER = "mgcda_core.export.timing_cache"


class ConvBatchNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Conv2d(4, 1, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(torch.relu(self.norm(self.conv(image)))), dim=3)


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return export_to_proto(ConvBatchNorm().eval(), ExportConfig(height=32, width=64)).SerializeToString()


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    stand_in = StandIn("10.3.0", "8.7")
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in)
    return stand_in


def use(monkeypatch: pytest.MonkeyPatch, version: str, capability: str = "8.7") -> StandIn:
    stand_in = StandIn(version, capability)
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in)
    return stand_in


def initializer_types(model: onnx.ModelProto) -> dict[str, int]:
    return {init.name: init.data_type for init in model.graph.initializer}


# --- flags and network type -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["10.3.0", "10.15.1", "11.1.0"])
def test_fp32_is_weakly_typed_float32_with_tf32_cleared(monkeypatch, onnx_bytes: bytes, version: str) -> None:
    trt = use(monkeypatch, version)
    assert build_serialized_engine(onnx_bytes, CONFIG["fp32"]) == b"stand-in engine for main_graph"
    (config,) = trt.configs
    assert trt.network_flags == [0]
    assert config.flags == set()  # TF32 (on by default) cleared; FP16 never set
    assert initializer_types(trt.parsed[0])["conv.weight"] == TensorProto.FLOAT  # the ONNX as exported
    assert config.profiles[0].shapes == {"image": (SHAPE, SHAPE, SHAPE)}
    assert config.pool_limits == {trt.MemoryPoolType.WORKSPACE: 1 << 30}


@pytest.mark.parametrize("version", ["10.3.0", "10.15.1", "11.1.0"])
def test_fp16_is_one_recipe_mixed_precision_onnx_strongly_typed(monkeypatch, onnx_bytes: bytes, version: str) -> None:
    trt = use(monkeypatch, version)
    build_serialized_engine(onnx_bytes, CONFIG["fp16"])
    (config,) = trt.configs
    assert trt.network_flags == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    assert config.flags == {trt.BuilderFlag.TF32}  # no FP16 flag on 10.x either: the graph carries the types
    types = initializer_types(trt.parsed[0])
    assert types["conv.weight"] == types["norm.weight"] == types["norm.bias"] == TensorProto.FLOAT16
    assert TensorProto.FLOAT not in types.values()  # BatchNorm's statistics too: no float32 weights left


def test_batchnorm_runs_in_float16_and_softmax_in_float32(onnx_bytes: bytes) -> None:
    half = to_mixed_precision(onnx.load_from_string(onnx_bytes))
    assert "BatchNormalization" not in fp32_op_types() and "Softmax" in fp32_op_types()
    producers = {output: node for node in half.graph.node for output in node.output}
    (norm,) = [n for n in half.graph.node if n.op_type == "BatchNormalization"]
    (softmax,) = [n for n in half.graph.node if n.op_type == "Softmax"]
    # BatchNorm's input comes straight from the float16 Conv; Softmax's through a Cast to float32 (to = 1).
    assert producers[norm.input[0]].op_type == "Conv"
    cast = producers[softmax.input[0]]
    assert cast.op_type == "Cast" and helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT


# --- the recipe in the engine cache key ------------------------------------------------------------------------

def test_recipe_is_in_the_key_and_a_changed_recipe_rebuilds(monkeypatch, tmp_path: Path, onnx_bytes: bytes) -> None:
    fp32 = engine_key(onnx_bytes, CONFIG["fp32"], "10.3.0", "Orin", "8.7")
    fp16 = engine_key(onnx_bytes, CONFIG["fp16"], "10.3.0", "Orin", "8.7")
    assert fp32.recipe == precision_recipe("fp32") and "TF32 off" in fp32.recipe
    assert fp16.recipe == precision_recipe("fp16") and "strongly typed" in fp16.recipe
    cache, builds = EngineCache(tmp_path), []
    cache.get_or_build(fp16, lambda: builds.append(1) or b"old recipe engine")
    # Keeping one more op type in float32 is a new recipe: the old engine must not be reused.
    monkeypatch.setattr(tensorrt_builder, "FP32_OPS", (*tensorrt_builder.FP32_OPS, "Add"))
    changed = engine_key(onnx_bytes, CONFIG["fp16"], "10.3.0", "Orin", "8.7")
    assert changed.recipe != fp16.recipe and changed.digest() != fp16.digest()
    # The old engine and sidecar found under the new key's name (as a digest collision would): still refused.
    cache.engine_path(fp16).rename(cache.engine_path(changed))
    cache.sidecar_path(cache.engine_path(fp16)).rename(cache.sidecar_path(cache.engine_path(changed)))
    result = cache.get_or_build(changed, lambda: b"new recipe engine")
    assert result.built and result.data == b"new recipe engine" and "recipe: cached" in result.reason


# --- minimum version and operators per version -----------------------------------------------------------------

@pytest.mark.parametrize("version", ["10.0.1", "10.2.0.19"])
def test_tensorrt_older_than_10_3_is_refused_with_one_message(monkeypatch, onnx_bytes: bytes, version: str) -> None:
    trt = use(monkeypatch, version)
    with pytest.raises(RuntimeError, match=rf"TensorRT {version} is too old: .* TensorRT >= 10\.3 .*Slice axes"):
        build_serialized_engine(onnx_bytes, CONFIG["fp32"])
    assert trt.parsed == []


def test_operator_list_per_version() -> None:
    newest = load_supported_ops()
    added_after_10_3 = {"BlackmanWindow", "HammingWindow", "HannWindow", "STFT", "Attention", "RotaryEmbedding",
                        "RMSNormalization", "TensorScatter"}
    assert set(OPERATORS_ADDED) <= newest.ops
    assert newest.ops - supported_ops_for("10.3.0.30").ops == added_after_10_3
    assert newest.ops - supported_ops_for("10.0.1").ops == added_after_10_3 | {"DeformConv"}
    assert newest.ops - supported_ops_for("10.14.1").ops == {"RotaryEmbedding", "RMSNormalization", "TensorScatter"}
    assert supported_ops_for("10.15.1") == supported_ops_for("11.1.0") == newest
    assert supported_ops_for("10.3.0").tensorrt_version == "10.3.0"
    assert parse_version("11.1.0.post1") == (11, 1)
    with pytest.raises(ValueError, match="cannot read a TensorRT version from 'ten'"):
        parse_version("ten")


def with_hann_window(onnx_bytes: bytes) -> bytes:
    """The model plus an (unused) HannWindow node, an operator TensorRT's parser supports from 10.4."""
    model = onnx.load_from_string(onnx_bytes)
    model.graph.initializer.append(helper.make_tensor("window_size", TensorProto.INT64, [], [8]))
    model.graph.node.append(helper.make_node("HannWindow", ["window_size"], ["window"]))
    return model.SerializeToString()


def test_build_checks_operators_against_the_installed_version(monkeypatch, onnx_bytes: bytes) -> None:
    use(monkeypatch, "10.3.0")
    with pytest.raises(ValueError, match=r"not supported by the TensorRT ONNX parser: HannWindow \(x1\)"):
        build_serialized_engine(with_hann_window(onnx_bytes), CONFIG["fp32"])
    use(monkeypatch, "10.4.0")
    assert build_serialized_engine(with_hann_window(onnx_bytes), CONFIG["fp32"]).startswith(b"stand-in engine")


# --- parser and build failures ---------------------------------------------------------------------------------

def test_parser_errors_and_failed_builds_are_reported(trt: StandIn, onnx_bytes: bytes) -> None:
    trt.parse_errors = ["node /Slice_4: axes must be an initializer", "second error"]
    expected = "parser refused the model: node /Slice_4: axes must be an initializer | second error"
    with pytest.raises(RuntimeError, match=re.escape(expected)):
        build_serialized_engine(onnx_bytes, CONFIG["fp32"])
    trt.parse_errors, trt.build_results = [], [False]
    with pytest.raises(RuntimeError, match="TensorRT failed to build the engine"):
        build_serialized_engine(onnx_bytes, CONFIG["fp32"])


# --- timing caches ---------------------------------------------------------------------------------------------

def test_timing_cache_file_per_version_capability_and_precision(tmp_path: Path) -> None:
    path = timing_cache_path(tmp_path, "10.3.0.30", "8.7", "fp16")
    assert path == tmp_path / "timing-trt10.3.0.30-sm87-fp16.cache"
    others = [("10.15.1", "8.7", "fp16"), ("10.3.0.30", "8.6", "fp16"), ("10.3.0.30", "8.7", "fp32")]
    assert len({path} | {timing_cache_path(tmp_path, *other) for other in others}) == 4
    odd = timing_cache_path(tmp_path, "11.1.0+cuda13/x", "12.0", "fp32")
    assert odd.name == "timing-trt11.1.0_cuda13_x-sm120-fp32.cache"  # a version string cannot escape the folder
    with pytest.raises(ValueError, match="compute capability must be 'major.minor', got 'sm87'"):
        timing_cache_path(tmp_path, "10.3.0", "sm87", "fp32")


def test_timing_cache_is_written_then_reused(trt: StandIn, tmp_path: Path, onnx_bytes: bytes, caplog) -> None:
    path = timing_cache_path(tmp_path, trt.__version__, trt.capability, "fp32")
    with caplog.at_level(logging.WARNING):
        build_serialized_engine(onnx_bytes, CONFIG["fp32"], path)
        assert path.read_bytes().endswith(b"|layer0")
        build_serialized_engine(onnx_bytes, CONFIG["fp32"], path)
    # The second build started from the first one's timings and added its own.
    assert [cache for _, cache in trt.builds] == [[], ["layer0"]]
    assert path.read_bytes().endswith(b"|layer0|layer1")
    assert caplog.records == []


@pytest.mark.parametrize("stored", [b"\x00garbage", b"stand-in-timing-cache|10.2.0|8.7|layer0",
                                    b"stand-in-timing-cache|10.3.0|8.6|layer0"],
                         ids=["unreadable", "other-tensorrt", "other-gpu"])
def test_refused_timing_cache_is_discarded_with_one_warning(trt: StandIn, tmp_path: Path, onnx_bytes: bytes,
                                                            caplog, stored: bytes) -> None:
    path = timing_cache_path(tmp_path, trt.__version__, trt.capability, "fp32")
    path.write_bytes(stored)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert build_serialized_engine(onnx_bytes, CONFIG["fp32"], path).startswith(b"stand-in engine")
    (message,) = [r.getMessage() for r in caplog.records]
    assert str(path) in message and "discarded" in message
    assert [cache for _, cache in trt.builds] == [[]]  # built from an empty cache
    assert path.read_bytes() == b"stand-in-timing-cache|10.3.0|8.7|layer0"  # replaced by this build's cache


def test_build_failing_with_a_stored_cache_is_retried_once_without_it(trt: StandIn, tmp_path: Path,
                                                                      onnx_bytes: bytes, caplog) -> None:
    path = timing_cache_path(tmp_path, trt.__version__, trt.capability, "fp32")
    path.write_bytes(b"stand-in-timing-cache|10.3.0|8.7|stale")
    trt.build_results = [False, True]
    with caplog.at_level(logging.WARNING):
        assert build_serialized_engine(onnx_bytes, CONFIG["fp32"], path).startswith(b"stand-in engine")
    assert [cache for _, cache in trt.builds] == [["stale"], []]
    (message,) = [r.getMessage() for r in caplog.records]
    assert "build failed with timing cache" in message and "once more without it" in message
    assert path.read_bytes() == b"stand-in-timing-cache|10.3.0|8.7|layer0"


def test_failing_to_save_the_timing_cache_keeps_the_engine(trt: StandIn, tmp_path: Path, onnx_bytes: bytes,
                                                           caplog) -> None:
    path = timing_cache_path(tmp_path, trt.__version__, trt.capability, "fp32")
    trt.fail_timing_serialize = True
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert build_serialized_engine(onnx_bytes, CONFIG["fp32"], path) == b"stand-in engine for main_graph"
    (message,) = [r.getMessage() for r in caplog.records]
    assert "could not save timing cache" in message and "serialize failed" in message
    assert not path.exists()
