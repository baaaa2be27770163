"""The node's model loading refuses an exported graph whose recorded score or stages do not fit its parameters,
whose export record belongs to another file, or whose inputs and outputs are not the score graph it runs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import rclpy
from onnx_graphs import score_graph, write_graph
from rclpy.context import Context

from mgcda_core.pipeline.detector import Detector
from mgcda_core.runtime.factory import allowed_cpus
from mgcda_core.runtime.lanes import LanedRuntime
from mgcda_core.runtime.onnx_runtime import OnnxRuntime
from mgcda_ros.model_loading import ModelLoadError, load_detector
from mgcda_ros.node import AnomalyDetection
from mgcda_ros.params import NodeParams
from mgcda_ros.replay import load_replay_detector

SIZE = {"input_height": 64, "input_width": 128}


def exported_file(tmp_path: Path, description: dict | None) -> Path:
    """A stand-in .onnx with the export record ``python -m mgcda_core.export`` writes (its sha256 matches; only
    the record is read before the graph)."""
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an onnx graph")
    if description is not None:
        (tmp_path / "model.onnx.json").write_text(json.dumps({
            "format": 1, "onnx_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "description": description}))
    return path


def load(path: Path, **params: object) -> Detector:
    return load_detector(NodeParams.from_mapping({"model_path": str(path), "score": "max_logit",
                                                  "backend": "onnxruntime", "device": "cpu", **SIZE, **params}))


def test_score_parameter_must_match_the_exported_score(tmp_path: Path) -> None:
    path = exported_file(tmp_path, {"stages": "score", "score": "max_logit"})
    with pytest.raises(ModelLoadError, match=r"computes the 'max_logit' score \(per model.onnx.json\) but "
                                             r"parameter score is 'msp'; set score: max_logit"):
        load(path, score="msp")


def test_a_prefix_export_is_refused(tmp_path: Path) -> None:
    path = exported_file(tmp_path, {"stages": "logits", "score": None})
    with pytest.raises(ModelLoadError, match="exported with --stages logits .* export it again with --stages score"):
        load(path)


@pytest.mark.parametrize("description", [{"stages": "score", "score": "max_logit"}, None])
def test_matching_or_unrecorded_score_goes_on_to_read_the_file(tmp_path: Path, description: dict | None) -> None:
    # past the record, the graph itself is read: this one is no ONNX graph, and the error names it once
    path = exported_file(tmp_path, description)
    with pytest.raises(ModelLoadError) as caught:
        load(path)
    assert str(caught.value).startswith(f"model file {path} is not a readable ONNX graph (DecodeError: ")
    assert str(caught.value).count(str(path)) == 1 and "\n" not in str(caught.value)


def test_unreadable_export_record_is_named(tmp_path: Path) -> None:
    path = exported_file(tmp_path, None)
    (tmp_path / "model.onnx.json").write_text("{ truncated")
    with pytest.raises(ModelLoadError, match="export record model.onnx.json is unreadable"):
        load(path)


def test_export_record_without_a_sha256_is_unreadable(tmp_path: Path) -> None:
    path = write_graph(score_graph(64, 128), tmp_path / "model.onnx")
    (tmp_path / "model.onnx.json").write_text(json.dumps({"format": 1, "description": {"stages": "score"}}))
    with pytest.raises(ModelLoadError, match=r"export record model.onnx.json is unreadable \(KeyError: "
                                             r"\"'onnx_sha256'\"\)"):
        load(path)


def test_export_record_of_another_file_is_refused_naming_both(tmp_path: Path) -> None:
    path = write_graph(score_graph(64, 128), tmp_path / "model.onnx", {"onnx_sha256": "ab" * 32,
                                                                        "description": {"stages": "score"}})
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ModelLoadError) as caught:
        load(path)
    assert str(caught.value) == (f"model file {path} (sha256 {actual}) does not match its export record "
                                 f"{path}.json (onnx_sha256 '{'ab' * 32}'): the two come from different exports; "
                                 "export the model again")


def test_a_hostile_record_hash_is_quoted_shortened(tmp_path: Path) -> None:
    path = write_graph(score_graph(64, 128), tmp_path / "model.onnx", {"onnx_sha256": "x" * 10_000})
    with pytest.raises(ModelLoadError) as caught:
        load(path)
    assert "(10002 characters)" in str(caught.value) and len(str(caught.value)) < 500


@pytest.mark.parametrize(("graph", "expected"), [
    (score_graph(64, 128, input_name="input"),
     "ONNX model inputs are ['input'], expected exactly one named 'image'"),
    (score_graph(64, 128, channels_out=19),
     "ONNX output 'score' is [1, 19, 64, 128], expected a score map N x 1 x H x W (H x W = 64 x 128)"),
    (score_graph(32, 64),
     "ONNX input 'image' has fixed shape [1, 3, 32, 64], expected H x W = 64 x 128"),
])
def test_a_graph_with_other_inputs_or_outputs_is_refused(tmp_path: Path, graph: onnx.ModelProto, expected: str) -> None:
    path = write_graph(graph, tmp_path / "other.onnx")
    with pytest.raises(ModelLoadError) as caught:
        load(path)
    assert str(caught.value) == (f"model file {path} is not a graph the node can run: {expected} "
                                 "(input_height x input_width = 64 x 128)")


def test_the_score_graph_with_its_record_loads_and_runs(tmp_path: Path) -> None:
    path = write_graph(score_graph(64, 128), tmp_path / "model.onnx", {"description": {"stages": "score",
                                                                                        "score": "max_logit"}})
    detector = load(path)
    raw = detector.raw_score(np.full((64, 128, 3), 51, np.uint8))
    np.testing.assert_allclose(raw, 0.2, atol=1e-6)


def _stops_spinning(detector: Detector) -> bool:
    """Whether every ONNX Runtime session of the detector stops its threads after a run (the node's runtime holds
    three: mgcda_core.runtime.lanes)."""
    runtime = detector.runtime
    members = runtime.members if isinstance(runtime, LanedRuntime) else (runtime,)
    for member in members:
        options = member.session.get_session_options()  # type: ignore[attr-defined]
        try:
            if options.get_session_config_entry("session.force_spinning_stop") != "1":
                return False
        except RuntimeError:  # ONNX Runtime: "does not have configuration with key" when never set
            return False
    return True


def test_the_nodes_onnx_runtime_threads_stop_after_each_run(tmp_path: Path) -> None:
    """Their spinning would take a core from the node's resize, overlay and publishing (docs/ROS.md)."""
    path = write_graph(score_graph(64, 128), tmp_path / "model.onnx", {"description": {"stages": "score",
                                                                                        "score": "max_logit"}})
    assert _stops_spinning(load(path))
    context = Context()
    rclpy.init(context=context, domain_id=(int(os.environ["ROS_DOMAIN_ID"]) + 43) % 200)
    node = rclpy.create_node("model_loading_test", context=context)
    try:  # the node's own loading path
        detection = AnomalyDetection(node, NodeParams.from_mapping({
            "model_path": str(path), "score": "max_logit", "backend": "onnxruntime", "device": "cpu", **SIZE}))
        detection.configure()
        assert detection.detector is not None and _stops_spinning(detection.detector)
        detection.cleanup()
        detection.close()
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_the_node_takes_two_frames_at_once_and_a_replay_one(tmp_path: Path) -> None:
    """The node's default builds the laned runtime (three sessions); replay and the demo call the detector one frame
    at a time and build one session."""
    path = write_graph(score_graph(64, 128), tmp_path / "model.onnx", {"description": {"stages": "score",
                                                                                        "score": "max_logit"}})
    params = NodeParams.from_mapping({"model_path": str(path), "score": "max_logit", "backend": "onnxruntime",
                                      "device": "cpu", **SIZE})
    node = load_detector(params).runtime
    assert params.frames_in_flight == 2
    if len(allowed_cpus()) >= 2:
        assert isinstance(node, LanedRuntime) and node.max_in_flight == 2
    else:  # one CPU: nothing to share out
        assert isinstance(node, OnnxRuntime)
    replayed = load_replay_detector(params).runtime
    assert isinstance(replayed, OnnxRuntime)
