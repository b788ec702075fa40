"""The consortium's feature schema: ordered feature names and public preprocessing constants.

Every site of a run must present the same features in the same order, scaled
the same way. The schema is *declared* by the consortium (shipped with a
bundled dataset, or written by the operators for their own CSV sites), never
estimated from one site's records: a scaling constant computed from a site's
rows would be a release outside the privacy ledger (one record would move every
other record's features, so DP-SGD's per-record sensitivity would no longer be
the clipping bound C). With declared constants each record is transformed on
its own:

    x' = (clip(x, low, high) - centre) / scale

so adding or removing a record changes no other record's features.

``digest()`` is a SHA-256 over the canonical JSON form; it goes into the run
configuration so that a site whose columns differ (names, order or constants)
is detected instead of training a silently wrong model (``check_digest``).

``classes`` (optional) is the consortium's declared, ordered class list: label
``classes[k]`` is class index k. Without it labels are the integers 0/1.

This module is sans-I/O (numpy only).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmap_secure.errors import DataError

SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """One feature: its name, its declared range [low, high], centre and scale.

    Values outside [low, high] are clipped to it before scaling (the range is
    public, so clipping is per-record and data-independent).
    """

    name: str
    low: float
    high: float
    centre: float
    scale: float

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise DataError(f"feature name {self.name!r} is empty or has surrounding spaces")
        values = (self.low, self.high, self.centre, self.scale)
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"feature {self.name!r}: low, high, centre and scale must be finite")
        if not self.low <= self.high:
            raise DataError(f"feature {self.name!r}: low {self.low} > high {self.high}")
        if not self.scale > 0:
            raise DataError(f"feature {self.name!r}: scale must be > 0, got {self.scale}")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "low": self.low,
            "high": self.high,
            "centre": self.centre,
            "scale": self.scale,
        }


IDENTITY_BOUND = 3.0e38
"""Range of an identity feature: every finite float32 value passes unchanged."""

BINARY_CLASSES = ("0", "1")


@dataclass(frozen=True, kw_only=True)
class FeatureSchema:
    """The ordered features of a consortium and its class list (see the module docstring)."""

    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.features:
            raise DataError("a feature schema needs at least one feature")
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DataError(f"feature schema: duplicate feature names {duplicates}")
        if self.classes is not None:
            if len(self.classes) < 2:
                raise DataError("feature schema: declare at least two classes")
            if any(not c or c != c.strip() for c in self.classes):
                raise DataError("feature schema: class labels must be non-empty, unpadded text")
            if len(set(self.classes)) != len(self.classes):
                raise DataError(f"feature schema: duplicate class labels {list(self.classes)}")

    @classmethod
    def identity(cls, names: Sequence[str]) -> FeatureSchema:
        """A schema that leaves features unchanged (centre 0, scale 1, no effective range).

        For data the caller has already put on a public scale (the synthetic
        generator, tensors given to the Python API): declaring it is still
        data-independent, so it keeps DP-SGD's per-record sensitivity at C.
        """
        return cls(
            features=tuple(
                FeatureSpec(name=n, low=-IDENTITY_BOUND, high=IDENTITY_BOUND, centre=0.0, scale=1.0)
                for n in names
            )
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def class_labels(self) -> tuple[str, ...]:
        """The declared classes, else the binary default ``("0", "1")``."""
        return self.classes if self.classes is not None else BINARY_CLASSES

    @property
    def n_classes(self) -> int:
        return len(self.class_labels)

    def __len__(self) -> int:
        return len(self.features)

    def transform(self, raw: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Clip each column of ``raw`` (n, d) to its range, centre and scale it; float32.

        Raises ``DataError`` for a wrong shape or a non-finite value.
        """
        x = np.asarray(raw, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise DataError(
                f"expected rows of {len(self.features)} features {list(self.names)}, "
                f"got an array of shape {x.shape}"
            )
        if not np.isfinite(x).all():
            raise DataError("feature values must be finite (impute missing values first)")
        low = np.array([f.low for f in self.features])
        high = np.array([f.high for f in self.features])
        centre = np.array([f.centre for f in self.features])
        scale = np.array([f.scale for f in self.features])
        scaled: npt.NDArray[np.float64] = (np.clip(x, low, high) - centre) / scale
        return scaled.astype(np.float32)

    def reorder_columns(self, columns: Sequence[str], *, source: str) -> list[int]:
        """Indices that put ``columns`` into schema order; refuse missing or extra names."""
        missing = [n for n in self.names if n not in columns]
        extra = [c for c in columns if c not in self.names]
        if missing or extra:
            raise DataError(
                f"{source}: columns differ from the consortium's feature schema "
                f"(missing {missing}, unexpected {extra})"
            )
        return [list(columns).index(n) for n in self.names]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": SCHEMA_VERSION,
            "features": [f.to_json() for f in self.features],
        }
        if self.classes is not None:
            out["classes"] = list(self.classes)
        return out

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON form (sorted keys, no spaces)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(b"fedmap-secure/feature-schema/v1\x00" + text.encode()).hexdigest()

    def check_digest(self, expected: str, *, source: str) -> None:
        """Refuse (``DataError`` naming ``source``) when ``expected`` is not this digest.

        A site calls this with the digest announced in the run configuration
        before it trains: a different feature set, order, range or class list
        would otherwise train a silently wrong model.
        """
        actual = self.digest()
        if expected != actual:
            raise DataError(
                f"{source}: feature schema digest {actual[:16]}... differs from the run's "
                f"{expected[:16]}... (different features, order, constants or classes)"
            )

    @classmethod
    def from_json(cls, data: object, *, source: str = "feature schema") -> FeatureSchema:
        """Parse ``to_json()`` output; every field is checked, unknown keys refused."""
        if not isinstance(data, Mapping) or not (
            {"version", "features"} <= set(data) <= {"version", "features", "classes"}
        ):
            raise DataError(
                f"{source}: expected an object with 'version', 'features' (and optional 'classes')"
            )
        if data["version"] != SCHEMA_VERSION:
            raise DataError(f"{source}: unsupported schema version {data['version']!r}")
        items = data["features"]
        if not isinstance(items, list):
            raise DataError(f"{source}: 'features' must be a list")
        specs = []
        keys = {"name", "low", "high", "centre", "scale"}
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or set(item) != keys:
                raise DataError(f"{source}: feature {i} must have exactly the keys {sorted(keys)}")
            name = item["name"]
            numbers = [item[k] for k in ("low", "high", "centre", "scale")]
            if not isinstance(name, str) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in numbers
            ):
                raise DataError(f"{source}: feature {i} has a non-string name or a non-number")
            specs.append(
                FeatureSpec(
                    name=name,
                    low=float(item["low"]),
                    high=float(item["high"]),
                    centre=float(item["centre"]),
                    scale=float(item["scale"]),
                )
            )
        classes = data.get("classes")
        if classes is not None and (
            not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
        ):
            raise DataError(f"{source}: 'classes' must be a list of strings")
        return cls(features=tuple(specs), classes=None if classes is None else tuple(classes))
