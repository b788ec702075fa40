"""Parse the optional ``sites.toml`` of a site folder: explicit tiers per site.

Format (every key optional; only ``tier`` is allowed inside a site table)::

    [sites.client_3]
    tier = "finetune"      # "train" | "finetune" | "unseen"
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedmap_secure.data.types import Tier
from fedmap_secure.errors import DataError

FILENAME = "sites.toml"
_TIERS = {t.value: t for t in Tier}


def read_tiers(path: Path) -> dict[str, Tier]:
    """Site name -> tier declared in ``path`` (which must exist)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc.reason}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    extra = sorted(set(document) - {"sites"})
    if extra:
        raise DataError(f"{path}: unknown top-level keys {extra}; only [sites.<name>] tables")
    sites = document.get("sites", {})
    if not isinstance(sites, dict):
        raise DataError(f"{path}: 'sites' must be a table of [sites.<name>] tables")
    return {name: _tier(path, name, entry) for name, entry in sites.items()}


def _tier(path: Path, name: str, entry: object) -> Tier:
    if not isinstance(entry, dict):
        raise DataError(f"{path}: [sites.{name}] must be a table")
    extra = sorted(set(entry) - {"tier"})
    if extra:
        raise DataError(f"{path}: [sites.{name}] has unknown keys {extra}; only 'tier'")
    value = entry.get("tier")
    if not isinstance(value, str) or value not in _TIERS:
        raise DataError(
            f"{path}: [sites.{name}] tier must be one of {sorted(_TIERS)}, got {value!r}"
        )
    return _TIERS[value]
