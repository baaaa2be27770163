"""Typed YAML configuration: load a YAML file (with ``extends:`` inheritance and ``--set key=value``
overrides) into nested dataclasses, refusing anything unexpected before any work starts.

Rules, generic to every dataclass config in the package:
- ``extends: other.yaml`` (path relative to the file that names it) loads ``other.yaml`` first and deep-merges this
  file over it: mappings merge key by key, any other value (lists included) replaces the parent's.
- An override ``a.b.c=value`` sets one key after all files are merged; ``value`` is parsed as YAML: ``3`` is
  an int, ``1e-4`` a float (YAML 1.2's rule, in files too), ``true`` a bool, ``null`` None, ``[1, 2]`` a list.
- Unknown keys, wrong types and missing required keys raise :class:`ConfigError` naming the dotted key path,
  the expected type and the value given. Values are never coerced, except int -> float and list -> tuple.
- A dataclass may check values in ``__post_init__`` by raising ``ValueError``; the message is re-raised as a
  ``ConfigError`` prefixed with the dataclass's key path.
- A float key refuses NaN and infinity (``.nan``, ``.inf``, ``1e400``). A file must be UTF-8 text of at most
  ``MAX_FILE_BYTES``; YAML aliases may not expand the document beyond ``MAX_EXPANDED_NODES`` nodes (an "alias
  bomb" of a few hundred bytes otherwise expands to gigabytes), and messages quote values shortened.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from mgcda_core.errors import ConfigError, shorten

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

EXTENDS_KEY = "extends"
MAX_FILE_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000  # train.yaml has about 60


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-4`` is a float, not the string PyYAML 1.1 makes of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text safely (with YAML 1.2 exponent floats), refusing documents whose aliases expand them
    beyond ``MAX_EXPANDED_NODES`` nodes (checked on the node graph, before anything is built)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, {})
        if expanded > MAX_EXPANDED_NODES:
            raise ConfigError(f"YAML aliases expand the document to more than {MAX_EXPANDED_NODES} nodes "
                              "(an alias bomb?); write the values out")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError("YAML nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes of the document with every alias expanded, counted once per distinct node (memoised)."""
    known = sizes.get(id(node))
    if known == -1:
        raise ConfigError("a YAML alias refers to a node that contains it (a recursive value)")
    if known is not None:
        return known
    sizes[id(node)] = -1  # being counted
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = size = min(size, MAX_EXPANDED_NODES + 1)
    return size


def load_config(cls: type[T], path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (following ``extends:``), apply ``key=value`` overrides and build a ``cls`` instance."""
    raw = load_yaml_tree(Path(path))
    for override in overrides:
        apply_override(raw, override)
    return from_dict(cls, raw)


def load_yaml_tree(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML mapping and, recursively, the files it ``extends``; return the merged mapping."""
    resolved = path.resolve()
    if resolved in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, resolved))
        raise ConfigError(f"circular 'extends' chain: {chain}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config file "
                          f"(at most {MAX_FILE_BYTES})")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8; a binary file?)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {shorten(str(error), 300)}") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    parent_name = data.pop(EXTENDS_KEY, None)
    if parent_name is None:
        return data
    if not isinstance(parent_name, str):
        raise ConfigError(f"{path}: '{EXTENDS_KEY}' must be a file path string, got {shorten(parent_name)}")
    parent = load_yaml_tree(path.parent / parent_name, (*_seen, resolved))
    return deep_merge(parent, data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: nested mappings merge, every other value replaces. Inputs are not modified."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override to ``raw`` in place (value parsed as YAML)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not part for part in parts):
        raise ConfigError(f"bad override {shorten(override)}: expected KEY=VALUE with a dotted key, e.g. optim.lr=1e-4")
    try:
        value = parse_yaml(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"bad override {shorten(override)}: value is not a YAML scalar or list: "
                          f"{shorten(str(error), 300)}") from None
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: depth + 1])
            raise ConfigError(f"bad override {shorten(override)}: {prefix} is a value ({shorten(child)}), "
                              "not a section")
        node = child
    node[parts[-1]] = value


def to_dict(config: Any) -> Any:
    """A dataclass config as plain YAML/JSON-able values (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], allowed: Sequence[str] = ()) -> str:
    """The leaves (dotted key paths) where two ``to_dict`` trees differ, as "key: old -> new; ..." in key order,
    leaving out the keys in ``allowed``; "" when they agree. For refusing to reuse a run made with other settings."""
    old, new = _flatten(saved), _flatten(current)
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in allowed)
    return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = _join(prefix, key)
        flat.update(_flatten(value, path) if isinstance(value, Mapping) else {path: value})
    return flat


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and type (see module docstring)."""
    where = prefix or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} keys, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [key for key in data if key not in fields]
    if unknown:
        path = _join(prefix, shorten(unknown[0]).strip("'"))
        raise ConfigError(f"unknown key '{path}'; {where} accepts: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        path = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], path)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{path}' ({_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: {error}") from None


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise _type_error(path, hint, value)
    if origin is typing.Literal:
        if not any(value == a and type(value) is type(a) for a in args):
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"'{path}': expected one of {choices}, got {_describe(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(path, hint, value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"'{path}': expected {len(args)} values ({_type_name(hint)}), got {_describe(value)}")
            items = [_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_hint = args[0] if args else Any
            items = [_convert(item_hint, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if not isinstance(value, bool):
            raise _type_error(path, hint, value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, hint, value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(path, hint, value)
        if not math.isfinite(value):
            raise ConfigError(f"'{path}': expected a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _type_error(path, hint, value)
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise _type_error(path, hint, value)
        return Path(value)
    raise TypeError(f"config_loader does not support the annotation {hint!r} of '{path}'")


def _type_error(path: str, hint: Any, value: Any) -> ConfigError:
    return ConfigError(f"'{path}': expected {_type_name(hint)}, got {_describe(value)}")


def _type_name(hint: Any) -> str:
    if hint is Path:
        return "a path string"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("pathlib.", "")


def _describe(value: Any) -> str:
    return f"{shorten(value)} ({type(value).__name__})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
