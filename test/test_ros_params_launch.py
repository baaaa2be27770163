"""Node parameters (typed, validated), config/anomaly.yaml, and the launch file against setup.py."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from mgcda_ros.params import NodeParams, ParameterError


def test_defaults_are_valid_and_config_yaml_matches_them(repo_root: Path):
    config = yaml.safe_load((repo_root / "config" / "anomaly.yaml").read_text())
    values = config["/**/anomaly_node"]["ros__parameters"]  # any namespace
    assert set(values) == {f.name for f in dataclasses.fields(NodeParams)}
    assert NodeParams.from_mapping(values) == NodeParams()


@pytest.mark.parametrize("name, value, fragment", [
    ("threshold", 1.5, "in [0, 1]"),
    ("overlay_alpha", -0.1, "in [0, 1]"),
    ("score", "bogus", "one of dissimilarity"),
    ("score", "ensemble", "training-free score"),
    ("backend", "cuda", "one of auto, torch"),
    ("device", "gpu0", "'cpu', 'cuda' or 'cuda:N'"),
    ("input_width", 100, "multiple of 32"),
    ("input_height", 16, "multiple of 32"),
    ("input_width", "512", "type int, got str"),
    ("publish_score", 1, "type bool, got int"),
    ("max_age_ms", -1.0, ">= 0"),
    ("input_transport", "theora", "one of raw, compressed"),
    ("precision", "int8", "one of fp32, fp16"),
    ("qos_reliability", "sometimes", "one of best_effort, reliable"),
    ("qos_depth", 0, "[1, 10000]"),
])
def test_invalid_values_are_refused_naming_the_parameter(name, value, fragment):
    with pytest.raises(ParameterError, match=rf"parameter .{name}. = .* is invalid: expected .*{re.escape(fragment)}"):
        NodeParams.from_mapping({name: value})


def test_integers_are_accepted_for_floats_and_unknown_names_refused():
    assert NodeParams.from_mapping({"threshold": 1, "max_age_ms": 0}).threshold == 1.0
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['treshold'\]"):
        NodeParams.from_mapping({"treshold": 0.3})
    assert NodeParams(model_path="/some/model.pt", score="ensemble").score == "ensemble"


def _launch_node_call(tree: ast.Module) -> dict[str, object]:
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    assert len(calls) == 1, "the launch file should start exactly one Node"
    return {kw.arg: kw.value for kw in calls[0].keywords}


def test_launch_file_matches_setup_entry_points_and_data_files(repo_root: Path):
    launch_file = repo_root / "launch" / "anomaly.launch.py"
    tree = ast.parse(launch_file.read_text())
    setup_text = (repo_root / "setup.py").read_text()
    node = _launch_node_call(tree)
    package = next(n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", None) == "PACKAGE")
    assert package == re.search(r'PACKAGE = "([^"]+)"', setup_text).group(1)
    assert node["executable"].value == "anomaly_node"
    assert re.search(r'"anomaly_node = mgcda_ros\.node:main"', setup_text)
    assert node["name"].value == "anomaly_node"
    # config/anomaly.yaml is what the launch file loads by default and what setup.py installs under share/<pkg>/config
    joined = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "join"]
    parts = [[a.value for a in call.args[1:]] for call in joined]
    assert ["config", "anomaly.yaml"] in parts
    assert '(f"share/{PACKAGE}/config", glob("config/*.yaml"))' in setup_text
    assert '(f"share/{PACKAGE}/launch", glob("launch/*.launch.py"))' in setup_text
    assert (repo_root / "config" / "anomaly.yaml").is_file() and launch_file.name.endswith(".launch.py")
    arguments = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "DeclareLaunchArgument"}
    assert arguments == {"camera_topic", "params_file", "use_sim_time", "namespace"}
    remapped = [pair.elts[0].value for pair in node["remappings"].elts]
    assert remapped == ["image", "image/compressed"]


def test_launch_description_loads_when_launch_ros_is_installed(repo_root: Path):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here; runs on a ROS machine")
    import importlib.util

    spec = importlib.util.spec_from_file_location("anomaly_launch", repo_root / "launch" / "anomaly.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {entity.name for entity in description.entities if hasattr(entity, "name")}
    assert {"camera_topic", "params_file", "use_sim_time", "namespace"} <= names
