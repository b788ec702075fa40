"""The consortium's schema file (``schema.toml``): declared features, constants and classes.

Format (every feature in order; ``source`` is free text, documentation only)::

    classes = ["no", "yes"]     # optional: ordered class labels, or an int K for 0..K-1
                                # (default: binary 0/1 labels)
    [[features]]
    name = "age"
    low = 18.0                  # declared plausible range: values are clipped to it
    high = 100.0
    centre = 55.0               # x' = (clip(x, low, high) - centre) / scale
    scale = 10.0
    source = "UCI heart-disease.names; adult patients"

Every constant must be PUBLIC (a clinical reference range, a data dictionary):
a value computed from a site's records is a release of that site's data
outside the privacy ledger. ``template_text`` writes a file to fill in: with
no ranges it writes ``nan`` placeholders that the loader refuses until they
are replaced; with ranges computed from the data it says so in the file.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.errors import DataError

FILENAME = "schema.toml"
_FEATURE_KEYS = frozenset({"name", "low", "high", "centre", "scale", "source"})
_REQUIRED = ("name", "low", "high", "centre", "scale")


def parse_schema_toml(text: str, *, source: str) -> FeatureSchema:
    """Parse a schema file's text (see the module docstring); ``DataError`` names ``source``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{source}: invalid TOML: {exc}") from exc
    extra = sorted(set(document) - {"features", "classes"})
    if extra:
        raise DataError(f"{source}: unknown top-level keys {extra}; only classes and [[features]]")
    items = document.get("features")
    if not isinstance(items, list) or not items:
        raise DataError(f"{source}: declare the features as [[features]] tables, in order")
    specs = [_spec(item, i, source) for i, item in enumerate(items)]
    try:
        return FeatureSchema(features=tuple(specs), classes=_classes(document, source))
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from exc


def _spec(item: object, index: int, source: str) -> FeatureSpec:
    if not isinstance(item, dict):
        raise DataError(f"{source}: features[{index}] must be a table")
    unknown = sorted(set(item) - _FEATURE_KEYS)
    missing = [k for k in _REQUIRED if k not in item]
    label = f"{source}: feature {item.get('name', index)!r}"
    if unknown or missing:
        raise DataError(f"{label}: missing keys {missing}, unknown keys {unknown}")
    name = item["name"]
    if not isinstance(name, str):
        raise DataError(f"{label}: name must be a string")
    numbers = {}
    for key in ("low", "high", "centre", "scale"):
        value = item[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(f"{label}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise DataError(
                f"{label}: {key} is {value}; fill in a public value (the template's placeholder)"
            )
        numbers[key] = float(value)
    if "source" in item and not isinstance(item["source"], str):
        raise DataError(f"{label}: source must be text")
    try:
        return FeatureSpec(name=name, **numbers)
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from exc


def _classes(document: Mapping[str, object], source: str) -> tuple[str, ...] | None:
    value = document.get("classes")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 2:
            raise DataError(f"{source}: classes = {value}; a classifier needs at least 2")
        return tuple(str(k) for k in range(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise DataError(f"{source}: classes must be an integer K or a list of label strings")


def read_schema_file(path: Path) -> FeatureSchema:
    """Read and parse ``path`` (which must exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: schema file not found") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    return parse_schema_toml(text, source=str(path))


def template_text(
    names: Sequence[str],
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    from_data: bool = False,
    classes: Sequence[str] | None = None,
) -> str:
    """A schema file to fill in.

    Without ``ranges`` every constant is ``nan`` (refused until replaced). With
    ``ranges`` (name -> (low, high)) each feature gets centre = mid-range and
    scale = a quarter of the range; ``from_data=True`` marks them as computed
    from the data, which the operator must replace with public values.
    """
    lines = [
        "# The consortium's declared feature schema (fedmap-secure).",
        "# Every constant must be PUBLIC: a clinical reference range, a data dictionary.",
        "# x' = (clip(x, low, high) - centre) / scale, one record at a time.",
    ]
    if from_data:
        lines += [
            "# WARNING: the ranges below were computed FROM THE DATA (min and max of the files).",
            "# They are a release of the sites' records outside the privacy ledger: replace",
            "# them with public values before a private run.",
        ]
    if classes is not None:
        lines.append("classes = [" + ", ".join(_quote(c) for c in classes) + "]")
    else:
        lines.append("# classes = 2            # or a list of label strings, in class order")
    for name in names:
        lines += ["", "[[features]]", f"name = {_quote(name)}"]
        if ranges is None or name not in ranges:
            lines += ["low = nan     # replace", "high = nan", "centre = nan", "scale = nan"]
            lines.append('source = ""  # where the constants come from')
            continue
        low, high = ranges[name]
        scale = (high - low) / 4.0 if high > low else 1.0
        lines += [
            f"low = {low!r}",
            f"high = {high!r}",
            f"centre = {(low + high) / 2.0!r}",
            f"scale = {scale!r}",
            'source = "COMPUTED FROM THE DATA: replace"' if from_data else 'source = ""',
        ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def schema_toml_text(schema: FeatureSchema, *, sources: Mapping[str, str] | None = None) -> str:
    """``schema`` as the text of a schema file (parses back to an equal schema)."""
    lines = ["# The consortium's declared feature schema (fedmap-secure)."]
    if schema.classes is not None:
        lines.append("classes = [" + ", ".join(_quote(c) for c in schema.classes) + "]")
    for spec in schema.features:
        lines += [
            "",
            "[[features]]",
            f"name = {_quote(spec.name)}",
            f"low = {spec.low!r}",
            f"high = {spec.high!r}",
            f"centre = {spec.centre!r}",
            f"scale = {spec.scale!r}",
        ]
        if sources and spec.name in sources:
            lines.append(f"source = {_quote(sources[spec.name])}")
    return "\n".join(lines) + "\n"
