"""The node's model loading refuses an exported graph whose recorded score or stages do not fit its parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgcda_ros.model_loading import ModelLoadError, load_detector
from mgcda_ros.params import NodeParams


def exported_file(tmp_path: Path, description: dict | None) -> Path:
    """A stand-in .onnx with the export sidecar ``python -m mgcda_core.export`` writes (only the sidecar is read
    before the runtime loads the file)."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an onnx graph")
    if description is not None:
        (tmp_path / "model.onnx.json").write_text(json.dumps({"format": 1, "description": description}))
    return path


def test_score_parameter_must_match_the_exported_score(tmp_path: Path) -> None:
    path = exported_file(tmp_path, {"stages": "score", "score": "max_logit"})
    with pytest.raises(ModelLoadError, match=r"computes the 'max_logit' score \(per model.onnx.json\) but "
                                             r"parameter score is 'msp'; set score: max_logit"):
        load_detector(NodeParams.from_mapping({"model_path": str(path), "score": "msp"}))


def test_a_prefix_export_is_refused(tmp_path: Path) -> None:
    path = exported_file(tmp_path, {"stages": "logits", "score": None})
    with pytest.raises(ModelLoadError, match="exported with --stages logits .* export it again with --stages score"):
        load_detector(NodeParams.from_mapping({"model_path": str(path), "score": "max_logit"}))


@pytest.mark.parametrize("description", [{"stages": "score", "score": "max_logit"}, None])
def test_matching_or_unrecorded_score_goes_on_to_load_the_file(tmp_path: Path, description: dict | None) -> None:
    # past the check, the runtime reads the file itself: this one is no ONNX graph, and the error names it once
    path = exported_file(tmp_path, description)
    with pytest.raises(ModelLoadError, match=f"cannot load model file {path}: "):
        load_detector(NodeParams.from_mapping({"model_path": str(path), "score": "max_logit",
                                               "backend": "onnxruntime"}))


def test_unreadable_export_record_is_named(tmp_path: Path) -> None:
    path = exported_file(tmp_path, None)
    (tmp_path / "model.onnx.json").write_text("{ truncated")
    with pytest.raises(ModelLoadError, match="export record model.onnx.json is unreadable"):
        load_detector(NodeParams.from_mapping({"model_path": str(path), "score": "max_logit"}))
