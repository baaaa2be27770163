"""Weight files are refused, in one line naming the file and the tensor or field, when they hold non-finite
values, a forged architecture or pickled code; nothing is built before the architecture is checked."""

from __future__ import annotations

import fractions
import tracemalloc
from pathlib import Path

import pytest
import torch

from mgcda_core.errors import ModelError
from mgcda_core.model.checkpoint import MAX_NUM_CLASSES, load_model, save_model
from mgcda_core.model.dissimilarity import DissimNetPrior
from mgcda_core.model.segmentation import DEFAULT_WEIGHTS, load_segmentation
from mgcda_core.model.weights_file import load_exact
from mgcda_core.training.run_checkpoints import CheckpointError, load_training_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model(path, DissimNetPrior(width=0.125))
    return path


def _edited(source: Path, target: Path, **changes: object) -> Path:
    payload = torch.load(source, weights_only=True)
    payload.update(changes)
    torch.save(payload, target)
    return target


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_checkpoint_weights_are_refused_naming_the_tensor(checkpoint: Path, tmp_path: Path,
                                                                      value: float) -> None:
    state = dict(torch.load(checkpoint, weights_only=True)["model"])
    state["head.bias"] = state["head.bias"].clone().fill_(value)
    path = _edited(checkpoint, tmp_path / "bad.pt", model=state)
    size = state["head.bias"].numel()
    with pytest.raises(ModelError, match=rf"^{path}: tensor 'head\.bias' holds {size} NaN or infinite value\(s\) "
                                         rf"of {size}; the weights are unusable"):
        load_model(path)


def test_non_finite_segmentation_weights_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    path = tmp_path / DEFAULT_WEIGHTS.name
    torch.save(state, path)
    with pytest.raises(ModelError, match=rf"^{path}: tensor '{key}' holds 1 NaN or infinite value"):
        load_segmentation("espnetv2", path)


def test_non_finite_training_checkpoint_is_not_resumed(checkpoint: Path, tmp_path: Path) -> None:
    state = dict(torch.load(checkpoint, weights_only=True)["model"])
    state["head.weight"] = torch.full_like(state["head.weight"], float("nan"))
    path = _edited(checkpoint, tmp_path / "latest.pt", model=state, training={"step": 3})
    with pytest.raises(CheckpointError, match=r"tensor 'head\.weight' holds"):
        load_training_checkpoint(path)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("width", 200.0, "a number in (0, 4]"),
    ("width", float("nan"), "a number in (0, 4]"),
    ("decoder_width", 4.5, "a number in (0, 4]"),
    ("width", "1", "a number in (0, 4]"),
    ("num_classes", MAX_NUM_CLASSES + 1, f"an integer in 1..{MAX_NUM_CLASSES}"),
    ("num_classes", True, f"an integer in 1..{MAX_NUM_CLASSES}"),
    ("first_level", 3, "an integer in 0..2"),
    ("encoder", "x" * 500, "one of vgg16, vgg16_bn, efficientnet_lite0"),
    ("use_prior", 1, "true or false"),
])
def test_forged_architecture_is_refused_before_building(checkpoint: Path, tmp_path: Path, field: str,
                                                        value: object, expected: str) -> None:
    architecture = {**torch.load(checkpoint, weights_only=True)["architecture"], field: value}
    path = _edited(checkpoint, tmp_path / "forged.pt", architecture=architecture)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError) as caught:
            load_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith(f"{path}: architecture field '{field}' must be {expected}, got ")
    assert len(message) < 300  # a 500-character value is quoted shortened
    assert peak < 50 * 2**20  # width 200 would build a multi-gigabyte network


def test_pickled_code_is_refused_in_one_line_without_unsafe_advice(tmp_path: Path) -> None:
    path = tmp_path / DEFAULT_WEIGHTS.name
    torch.save({"format": "mgcda", "payload": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ModelError) as caught:
        load_model(path)
    assert str(caught.value) == (f"{path}: refused: the file holds the Python object 'fractions.Fraction', which "
                                 "loading would execute; a mgcda checkpoint holds only tensors and plain values")
    with pytest.raises(ModelError, match="refused: the file holds the Python object 'fractions.Fraction'") as seg:
        load_segmentation("espnetv2", path)
    assert "weights_only" not in str(seg.value) and "\n" not in str(seg.value)


def test_one_strict_loader_lists_every_kind_of_difference_with_counts() -> None:
    """Checkpoints and plug-ins share ``load_exact``: its refusal names the source, what the weights were for, and
    per kind the count and the first keys, leaving the module untouched."""
    module = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    before = {key: value.clone() for key, value in module.state_dict().items()}
    state = {f"extra.{i}": torch.zeros(1) for i in range(7)}
    state["0.weight"] = torch.zeros(4, 2)
    state["0.bias"] = torch.zeros(3)
    with pytest.raises(ModelError) as error:
        load_exact(module, state, "weights.pt", "the test network")
    message = str(error.value)
    assert message.startswith("weights.pt: weights do not fit the test network: ")
    assert "2 missing keys: 1.weight, 1.bias" in message
    assert "7 unexpected keys: extra.0, extra.1, extra.2, extra.3, extra.4 (+2 more)" in message
    assert "1 shape mismatches: 0.weight: file (4, 2) vs model (3, 2)" in message
    assert all(torch.equal(before[key], value) for key, value in module.state_dict().items())

    exact = {key: torch.full_like(value, 0.5) for key, value in before.items()}
    load_exact(module, exact, "weights.pt")
    assert all(torch.equal(exact[key], value) for key, value in module.state_dict().items())
