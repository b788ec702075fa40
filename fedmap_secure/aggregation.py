"""The one seam between the algorithm and how sums are computed.

Every method's server update is a function of *sums over sites* only. A site
turns what it wants to contribute into a flat float64 vector laid out by a
``VectorLayout``; an ``Aggregator`` returns the elementwise sum over the sites
that completed the round and nothing else. ``PlainSum`` adds the vectors in the
clear (for comparison runs); secure aggregation (``fedmap_secure.secagg``)
implements the same protocol, so swapping one for the other changes no
algorithm code.

This module is sans-I/O: numpy only, no torch, no clock, no filesystem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedmap_secure.errors import ConfigError

FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class Field:
    """One named block of a contribution vector.

    ``bound`` is the declared magnitude bound of every coordinate of one site's
    value: secure aggregation clips to [-bound, bound] before encoding and
    counts how many coordinates it had to clip.
    """

    name: str
    length: int
    bound: float

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ConfigError(f"field name {self.name!r} is not an identifier")
        if self.length < 1:
            raise ConfigError(f"field {self.name!r}: length must be >= 1, got {self.length}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ConfigError(f"field {self.name!r}: bound must be finite and > 0")


@dataclass(frozen=True)
class VectorLayout:
    """An ordered tuple of fields: how a contribution maps to one flat vector."""

    fields: tuple[Field, ...]
    _offsets: dict[str, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets: dict[str, tuple[int, int]] = {}
        start = 0
        for f in self.fields:
            if f.name in offsets:
                raise ConfigError(f"duplicate field name {f.name!r} in layout")
            offsets[f.name] = (start, start + f.length)
            start += f.length
        object.__setattr__(self, "_offsets", offsets)

    @property
    def size(self) -> int:
        return sum(f.length for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def bounds(self) -> FloatVector:
        """Per-coordinate declared bound, as one vector of ``size``."""
        return np.concatenate([np.full(f.length, f.bound, dtype=np.float64) for f in self.fields])

    def flatten(self, values: Mapping[str, npt.ArrayLike]) -> FloatVector:
        """Concatenate named values in layout order, checking names and lengths."""
        missing = set(self.names) - set(values)
        extra = set(values) - set(self.names)
        if missing or extra:
            raise ConfigError(
                f"contribution fields do not match layout: missing {sorted(missing)}, "
                f"unexpected {sorted(extra)}"
            )
        parts = []
        for f in self.fields:
            arr = np.asarray(values[f.name], dtype=np.float64).reshape(-1)
            if arr.size != f.length:
                raise ConfigError(f"field {f.name!r}: expected {f.length} values, got {arr.size}")
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f"field {f.name!r}: contains NaN or infinity")
            parts.append(arr)
        return np.concatenate(parts)

    def unflatten(self, vector: FloatVector) -> dict[str, FloatVector]:
        if vector.shape != (self.size,):
            raise ConfigError(f"vector has shape {vector.shape}, layout needs ({self.size},)")
        return {name: vector[a:b].copy() for name, (a, b) in self._offsets.items()}


@dataclass(frozen=True, kw_only=True)
class AggregateResult:
    """What the server learns from one aggregation: sums and who took part.

    ``contributors`` are the sites whose input is inside ``sums``;
    ``clipped_coordinates`` is the total number of coordinates, over all
    contributors, that exceeded their declared bound (0 for a plain sum).
    """

    sums: Mapping[str, FloatVector]
    contributors: frozenset[str]
    clipped_coordinates: int = 0


class Aggregator(Protocol):
    """Computes the elementwise sum of site vectors for one round."""

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        """Sum ``inputs`` (site id -> flat vector of ``layout.size``).

        ``context`` is a digest of what every site must agree on this round
        (global model, prior, configuration); secure implementations bind it
        into the session. Sites absent from ``inputs`` have dropped out or
        declined.
        """
        ...

    def describe(self) -> dict[str, object]:
        """A JSON-ready description for ``summary.json['privacy']``."""
        ...


class PlainSum:
    """Adds vectors in the clear. For ``--no-secagg`` comparison runs only."""

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        if not inputs:
            raise ConfigError(f"round {round_index}: no site contributed")
        total = np.zeros(layout.size, dtype=np.float64)
        for site, vec in inputs.items():
            if vec.shape != (layout.size,):
                raise ConfigError(f"site {site!r}: vector shape {vec.shape} != ({layout.size},)")
            total += vec
        return AggregateResult(sums=layout.unflatten(total), contributors=frozenset(inputs))

    def describe(self) -> dict[str, object]:
        return {"protocol": "none (plain sum)", "n": None, "k": None, "t": None}
