"""Property-based fuzzing (hypothesis) of what reads user files and messages: the config loader, the image readers
and the node's CompressedImage decoder. Whatever the bytes, the result is a valid value or one line of the
project's error type, and memory stays bounded (tracemalloc peak of the call)."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mgcda_core.errors import MgcdaError
from mgcda_core.training.config import TrainConfig, load_train_config
from mgcda_core.utils.cli import one_line
from mgcda_core.utils.images import read_label, read_rgb

MEMORY_BOUND = 64 * 2**20
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def bounded(call, *args):
    """``call(*args)`` → (result or the project error, peak bytes); any other exception propagates (a bug)."""
    tracemalloc.start()
    try:
        try:
            result = call(*args)
        except MgcdaError as error:
            result = error
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def assert_one_line_error(result: object) -> None:
    if isinstance(result, MgcdaError):
        text = one_line(result)
        assert text and "\n" not in text and len(text) <= 2000


KEYS = st.sampled_from(["optim", "lr", "model", "width", "train", "seed", "data", "input_size", "extends", "x"])
SCALARS = st.one_of(st.integers(), st.floats(), st.text(max_size=30), st.booleans(), st.none())
TREES = st.recursive(SCALARS, lambda children: st.one_of(st.lists(children, max_size=4),
                                                         st.dictionaries(KEYS, children, max_size=4)), max_leaves=20)
YAML_PIECES = st.sampled_from(["optim:\n", "  lr: ", ".nan", ".inf", "1e400", "&a ", "*a", "[", "]", "{", "}",
                               "- ", ": ", "\n", "'", "\"", "!!python/object:os.system ", "\x00", "\xff", "model:\n",
                               "  width: ", "-1", "extends: ", "train.yaml"])


@FUZZ
@given(text=st.one_of(st.lists(YAML_PIECES, max_size=30).map("".join), st.text(max_size=200)))
def test_config_loader_on_arbitrary_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result, peak = bounded(load_train_config, path, (), False)
    assert isinstance(result, (TrainConfig, MgcdaError)), result
    assert_one_line_error(result)
    assert peak < MEMORY_BOUND


@FUZZ
@given(tree=st.dictionaries(KEYS, TREES, max_size=5))
def test_config_loader_on_arbitrary_trees(tmp_path: Path, tree: dict) -> None:
    import yaml

    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree))
    result, peak = bounded(load_train_config, path, (), False)
    assert isinstance(result, (TrainConfig, MgcdaError)), result
    assert_one_line_error(result)
    assert peak < MEMORY_BOUND


@FUZZ
@given(data=st.binary(max_size=300))
def test_config_loader_on_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    result, peak = bounded(load_train_config, path, (), False)
    assert isinstance(result, (TrainConfig, MgcdaError)), result
    assert_one_line_error(result)
    assert peak < MEMORY_BOUND


def _encoded(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(0)
    shape = (12, 20, 3) if mode == "RGB" else (12, 20)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = [_encoded("PNG", "RGB"), _encoded("PNG", "L"), _encoded("JPEG", "RGB"), _encoded("PNG", "P")]


def _mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[: max(cut, 1)])


MUTATED = st.builds(_mutate, st.sampled_from(SEEDS),
                    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
                    st.integers(1, 2_000))
# Headers that declare huge images: PNG IHDR width/height bytes (offsets 16..23) set high.
HUGE = st.builds(lambda w, h: _mutate(SEEDS[0], [(16 + i, b) for i, b in enumerate(w.to_bytes(4, "big")
                                                                                    + h.to_bytes(4, "big"))], 10_000),
                 st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))


@pytest.mark.parametrize("reader", [read_rgb, read_label])
@FUZZ
@given(data=st.one_of(MUTATED, HUGE, st.binary(max_size=200)))
def test_image_readers_on_arbitrary_bytes(tmp_path: Path, reader, data: bytes) -> None:
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    result, peak = bounded(reader, path)
    if isinstance(result, np.ndarray):
        assert result.dtype in (np.uint8, np.uint16, np.int32, np.bool_) and result.ndim in (2, 3)
    else:
        assert isinstance(result, MgcdaError), result
        assert_one_line_error(result)
        assert str(path) in str(result)
    assert peak < MEMORY_BOUND


class _Compressed:
    """What the node reads of a sensor_msgs/CompressedImage: ``format`` and ``data``."""

    def __init__(self, fmt: str, data: bytes) -> None:
        self.format, self.data = fmt, data


@FUZZ
@given(data=st.one_of(MUTATED, HUGE, st.binary(max_size=200)), fmt=st.sampled_from(["png", "jpeg", "bgr8; jpeg"]))
def test_compressed_messages_decode_within_the_declared_limit_or_are_rejected(data: bytes, fmt: str) -> None:
    from mgcda_ros.conversions import RejectedImage, message_to_rgb

    limit = 64 * 64  # the seeds are 20 x 12: anything bigger must be refused from its header, never decoded
    result, peak = bounded(message_to_rgb, _Compressed(fmt, data), limit)
    if isinstance(result, np.ndarray):
        assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3
        assert result.shape[0] * result.shape[1] <= limit
    else:
        assert isinstance(result, RejectedImage), result
        assert_one_line_error(result)
    assert peak < MEMORY_BOUND
