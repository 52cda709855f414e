"""Strict conversion of plain YAML/dict data into frozen dataclasses.

Every config in clafed is a frozen dataclass; this module turns a mapping into one and rejects
unknown keys and wrong types with a message naming the source file and the dotted key, so a
hospital's IT sees `sites/h1.yaml: train.lr: expected a number, got 'fast'`, not a traceback.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

from common.errors import ClafedError

T = TypeVar("T")


class ConfigError(ClafedError, ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def from_dict(cls: type[T], data: Any, source: str = "config", prefix: str = "") -> T:
    """Build dataclass `cls` from `data`, checking keys and types recursively."""
    where = f"{source}: {prefix.rstrip('.')}" if prefix else source
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"allowed: {', '.join(fields)}")
    hints = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, source, f"{prefix}{name}")
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # __post_init__ checks name the offending value
        raise ConfigError(f"{where}: {err}") from None


def merge(base: T, overrides: dict[str, Any] | None, source: str = "overrides") -> T:
    """Return `base` with nested `overrides` applied, checked like `from_dict`."""
    if not overrides:
        return base
    merged = _deep_update(to_dict(base), overrides)
    return from_dict(type(base), merged, source)


def to_dict(obj: Any) -> Any:
    """Plain, YAML/JSON-friendly form of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _StringDateLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as the strings written (configs parse them themselves)."""


_StringDateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning syntax errors into a ConfigError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=_StringDateLoader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} malformed YAML: {getattr(err, 'problem', err)}") from None


def _deep_update(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check `value` against type `tp`, converting where YAML is looser than Python."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(cast(type, tp), value, source, f"{key}.")
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, source, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1])
    if origin is Literal:
        if value not in get_args(tp):
            allowed = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{source}: {key}: expected one of {allowed}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        item = get_args(tp)[0]
        return tuple(_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value))
    return _convert_scalar(tp, value, source, key)


def _convert_scalar(tp: Any, value: Any, source: str, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{source}: {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{source}: {key}: expected a path, got {value!r}")
    if tp is typing.Any:
        return value
    raise ConfigError(f"{source}: {key}: unsupported config type {tp!r}")
