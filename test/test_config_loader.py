"""Generic typed YAML loader: extends, --set overrides, and one clear error per bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mgcda_core.config_loader import (
    ConfigError,
    apply_override,
    config_differences,
    deep_merge,
    from_dict,
    load_config,
    to_dict,
)


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    size: tuple[int, int] = (2, 3)
    mode: Literal["a", "b"] = "a"

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate}")


@dataclass(frozen=True)
class Outer:
    name: str
    count: int = 1
    flag: bool = False
    root: Path = Path("data")
    limit: int | None = None
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_values_are_typed_and_defaults_filled() -> None:
    config = from_dict(Outer, {"name": "x", "count": 3, "root": "/r", "inner": {"rate": 2, "size": [4, 5]}})
    assert config == Outer(name="x", count=3, root=Path("/r"), inner=Inner(rate=2.0, size=(4, 5)))
    assert isinstance(config.inner.rate, float) and isinstance(config.inner.size, tuple)
    assert to_dict(config) == {"name": "x", "count": 3, "flag": False, "root": "/r", "limit": None, "tags": [],
                               "inner": {"rate": 2.0, "size": [4, 5], "mode": "a"}}


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "inner": {"rat": 1.0}}, "unknown key 'inner.rat'; inner accepts: rate, size, mode"),
    ({"name": "x", "colour": 1}, "unknown key 'colour'"),
    ({"name": "x", "count": "3"}, "'count': expected int, got '3' (str)"),
    ({"name": "x", "count": True}, "'count': expected int, got True (bool)"),
    ({"name": "x", "count": 2.5}, "'count': expected int, got 2.5 (float)"),
    ({"name": "x", "flag": 1}, "'flag': expected bool, got 1 (int)"),
    ({"name": "x", "inner": {"size": [1, 2, 3]}}, "'inner.size': expected 2 values"),
    ({"name": "x", "inner": {"size": [1, "2"]}}, "'inner.size[1]': expected int, got '2' (str)"),
    ({"name": "x", "inner": {"mode": "c"}}, "'inner.mode': expected one of 'a', 'b', got 'c' (str)"),
    ({"name": "x", "inner": 3}, "inner: expected a mapping of Inner keys, got 3 (int)"),
    ({"name": "x", "limit": "none"}, "'limit': expected int, got 'none' (str)"),
    ({"name": "x", "tags": ["a", 1]}, "'tags[1]': expected str, got 1 (int)"),
    ({"name": "x", "root": 5}, "'root': expected a path string, got 5 (int)"),
    ({"count": 1}, "missing required key 'name' (str)"),
    ({"name": "x", "inner": {"rate": -1}}, "inner: rate must be >= 0, got -1.0"),
])
def test_bad_values_name_key_type_and_value(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_dict(Outer, data)
    assert message in str(error.value)


def test_extends_deep_merges_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    write(tmp_path / "base.yaml", "name: base\ncount: 2\ntags: [a, b]\ninner: {rate: 0.25, mode: b}\n")
    child = write(tmp_path / "presets" / "child.yaml",
                  "extends: ../base.yaml\ntags: [c]\ninner: {rate: 1.5}\n")
    config = load_config(Outer, child)
    # inner merges key by key (mode kept from base), a list replaces the parent's list.
    assert config == Outer(name="base", count=2, tags=["c"], inner=Inner(rate=1.5, mode="b"))
    grandchild = write(tmp_path / "presets" / "grand.yaml", "extends: child.yaml\ncount: 7\n")
    assert load_config(Outer, grandchild).count == 7


def test_extends_errors(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="circular 'extends' chain"):
        load_config(Outer, a)
    missing = write(tmp_path / "m.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.yaml"):
        load_config(Outer, missing)
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(Outer, write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, write(tmp_path / "bad.yaml", "name: [unclosed\n"))


def test_overrides_parse_yaml_scalars(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "name: file\n")
    config = load_config(Outer, path, ["count=5", "inner.rate=1e-4", "flag=true", "limit=null",
                                        "inner.size=[8, 16]", "tags=[x, y]", "name=over ride"])
    assert config == Outer(name="over ride", count=5, flag=True, tags=["x", "y"],
                           inner=Inner(rate=1e-4, size=(8, 16)))
    assert load_config(Outer, path, ["limit=3"]).limit == 3


@pytest.mark.parametrize(("override", "message"), [
    ("count", "bad override 'count': expected KEY=VALUE"),
    ("=3", "bad override '=3'"),
    ("inner..rate=1", "bad override 'inner..rate=1'"),
    ("count.sub=1", "count is a value (1), not a section"),
    ("tags=[1,", "value is not a YAML scalar or list"),
    ("inner.rte=1", "unknown key 'inner.rte'"),
    ("count=many", "'count': expected int, got 'many' (str)"),
])
def test_bad_overrides_are_refused(tmp_path: Path, override: str, message: str) -> None:
    path = write(tmp_path / "c.yaml", "name: file\ncount: 1\n")
    with pytest.raises(ConfigError) as error:
        load_config(Outer, path, [override])
    assert message in str(error.value)


def test_merge_and_override_do_not_modify_inputs() -> None:
    base = {"a": {"b": 1, "c": 2}}
    merged = deep_merge(base, {"a": {"b": 5}})
    assert merged == {"a": {"b": 5, "c": 2}} and base == {"a": {"b": 1, "c": 2}}
    raw: dict = {}
    apply_override(raw, "x.y.z=1")
    assert raw == {"x": {"y": {"z": 1}}}


def test_config_differences_lists_changed_leaves_by_dotted_key() -> None:
    saved = {"train": {"seed": 0, "log_every": 5}, "data": {"size": [64, 128]}, "old": 1}
    current = {"train": {"seed": 1, "log_every": 10}, "data": {"size": [64, 128]}, "new": True}
    assert config_differences(saved, current) == ("new: None -> True; old: 1 -> None; train.log_every: 5 -> 10; "
                                                  "train.seed: 0 -> 1")
    assert config_differences(saved, current, allowed=("train.log_every", "old", "new")) == "train.seed: 0 -> 1"
    assert config_differences(saved, saved) == ""
