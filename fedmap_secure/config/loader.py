"""Read a ``SimulationConfig`` from TOML, strictly.

Layout: a ``[simulation]`` table for the top-level scalars (method, rounds,
seed, finetune_rounds) and one table per nested section (``[model]``,
``[training]``, ``[prior]``, ``[server]``, ``[score]``, ``[bounds]``,
``[fedprox]``). Unknown tables or keys, and values of the wrong type, raise
``ConfigError`` naming ``section.key``. Missing keys keep the defaults of
``SimulationConfig()`` (the values documented in ``default.toml``).
"""

from __future__ import annotations

import dataclasses
import enum
import tomllib
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.errors import ConfigError

T = TypeVar("T")

_TOP_LEVEL = "simulation"
_DEFAULTS = SimulationConfig()


def default_config_text() -> str:
    """The packaged, documented default configuration (TOML text)."""
    return resources.files("fedmap_secure.config").joinpath("default.toml").read_text("utf-8")


def load_config(path: Path | str | None = None) -> SimulationConfig:
    """Load the TOML file ``path`` (or the packaged default) into a validated
    ``SimulationConfig``; unknown keys and wrong types raise ``ConfigError``."""
    if path is None:
        return parse_config(default_config_text(), source="default.toml")
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> SimulationConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    hints = typing.get_type_hints(SimulationConfig)
    nested = {
        f.name
        for f in dataclasses.fields(SimulationConfig)
        if dataclasses.is_dataclass(hints[f.name])
    }
    values: dict[str, Any] = {}
    for table, content in doc.items():
        if not isinstance(content, dict):
            raise ConfigError(f"{source}: top-level key {table!r} must be a [table]")
        if table == _TOP_LEVEL:
            for key, raw in content.items():
                if key in nested or key not in hints:
                    raise ConfigError(f"{source}: unknown key {_TOP_LEVEL}.{key}")
                values[key] = _convert(raw, hints[key], f"{_TOP_LEVEL}.{key}", source)
        elif table in nested:
            values[table] = update_dataclass(getattr(_DEFAULTS, table), content, table, source)
        else:
            raise ConfigError(f"{source}: unknown table [{table}]")
    try:
        return SimulationConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def update_dataclass(base: T, table: Mapping[str, Any], section: str, source: str) -> T:
    """``base`` with the keys of a TOML table replaced, each converted and checked."""
    hints = typing.get_type_hints(type(base))
    known = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {section}.{key}")
        kwargs[key] = _convert(raw, hints[key], f"{section}.{key}", source)
    try:
        return dataclasses.replace(base, **kwargs)  # type: ignore[type-var]
    except ConfigError as exc:
        raise ConfigError(f"{source}: [{section}] {exc}") from None


def _convert(raw: object, hint: Any, name: str, source: str) -> object:
    """Check one TOML value against a field's type hint and convert it."""
    origin = typing.get_origin(hint)
    if origin is types.UnionType:
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if raw is None else _convert(raw, inner, name, source)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: {name} must be a table")
        return _convert_record(hint, raw, name, source)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        if not isinstance(raw, list):
            raise ConfigError(f"{source}: {name} must be a list")
        return tuple(_convert(v, item, f"{name}[{i}]", source) for i, v in enumerate(raw))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if raw not in allowed:
            raise ConfigError(f"{source}: {name} must be one of {allowed}, got {raw!r}")
        return hint(raw)
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{source}: {name} must be true or false")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{source}: {name} must be an integer, got {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{source}: {name} must be a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{source}: {name} must be a string")
        return raw
    raise ConfigError(f"{source}: {name} has an unsupported type {hint!r}")  # pragma: no cover


def _convert_record(cls: type[T], table: Mapping[str, Any], name: str, source: str) -> T:
    """A dataclass with required fields (e.g. an array-of-tables entry) from a TOML table."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key {name}.{unknown[0]}")
    kwargs = {k: _convert(v, hints[k], f"{name}.{k}", source) for k, v in table.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{source}: {name}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{source}: {name}: {exc}") from None


def config_to_dict(config: object) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (enums as values, tuples as lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = config_to_dict(value)
        elif isinstance(value, enum.Enum):
            out[f.name] = value.value
        elif isinstance(value, tuple):
            out[f.name] = [config_to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        else:
            out[f.name] = value
    return out
