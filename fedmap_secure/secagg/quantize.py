"""Fixed-point encoding of float vectors into Z_{2^bits} for secure summation.

For a field with declared bound B and f fractional bits, a site encodes each
coordinate x as

    c = clip(x, -B, B)                    (counted if |x| > B)
    v = c * 2^f                           (exact: a power-of-two scaling)
    q = floor(v) + [U < v - floor(v)]     U uniform on [0, 1) from 53 CSPRNG bits
    e = q mod 2^bits                      (centred: negatives wrap to the top half)

Stochastic rounding is unbiased, E[q] = v, with |q - v| < 1. The vector gets
one extra coordinate, the number of clipped coordinates, so the clip count is
summed *inside the same secure sum*: the operator learns the total but not
whose values were clipped.

Setup check (no silent wrap-around): with at most ``n_max`` summands every
partial sum of field i lies in [-n_max * L_i, n_max * L_i] where
L_i = ceil(B_i 2^{f_i}); ``Quantizer`` refuses unless n_max * L_i <= 2^(bits-1) - 1
for every field and for the clip counter (n_max * size), so the centred decode
of the sum is exact. It also requires L_i <= 2^52 so v is an exact float64.

Decoding error of a sum over n <= n_max sites, per coordinate of field i
(excluding clipping, which the counter reports):

    |decoded - sum of clipped inputs| < n * 2^-f_i + n * B_i * 2^-52

(first term: stochastic rounding; second: rounding the exact integer sum to
float64). ``error_bound`` returns this bound.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import RingSpec

MAX_EXACT_LEVEL = 2**52


def encoded_length(layout: VectorLayout) -> int:
    """Length of an encoded vector: the layout plus the clip counter."""
    return layout.size + 1


def _levels(bound: float, fractional_bits: int) -> int:
    return math.ceil(bound * 2.0**fractional_bits)


@dataclass(frozen=True, kw_only=True)
class Quantizer:
    """Encoder/decoder for one layout; ``fractional_bits`` has one entry per field."""

    layout: VectorLayout
    n_max: int
    bits: int
    fractional_bits: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.fractional_bits) != len(self.layout.fields):
            raise ConfigError("fractional_bits needs one entry per layout field")
        if self.n_max < 1 or not 2 <= self.bits <= 64:
            raise ConfigError(f"invalid n_max={self.n_max} or bits={self.bits}")
        room = 2 ** (self.bits - 1) - 1
        for f, frac in zip(self.layout.fields, self.fractional_bits, strict=True):
            levels = _levels(f.bound, frac)
            if levels > MAX_EXACT_LEVEL:
                raise ConfigError(f"field {f.name!r}: bound * 2^{frac} exceeds 2^52")
            if self.n_max * levels > room:
                raise ConfigError(
                    f"field {f.name!r}: n_max * bound * 2^{frac} = {self.n_max * levels} "
                    f"does not fit in 2^(bits-1) - 1 = {room}; lower fractional_bits or "
                    "raise bits"
                )
        if self.n_max * self.layout.size > room:
            raise ConfigError("the clip counter could overflow: n_max * size > 2^(bits-1) - 1")

    @classmethod
    def auto(cls, layout: VectorLayout, *, n_max: int, bits: int) -> Quantizer:
        """The finest resolution that fits: per field the largest f passing the setup check."""
        room = 2 ** (bits - 1) - 1
        fracs = []
        for f in layout.fields:
            frac = 0
            if n_max * _levels(f.bound, 0) > room:
                raise ConfigError(f"field {f.name!r}: bound {f.bound} too large for {bits} bits")
            while frac < 200:
                nxt = _levels(f.bound, frac + 1)
                if nxt > MAX_EXACT_LEVEL or n_max * nxt > room:
                    break
                frac += 1
            fracs.append(frac)
        return cls(layout=layout, n_max=n_max, bits=bits, fractional_bits=tuple(fracs))

    @property
    def ring(self) -> RingSpec | None:
        """None: the length and parameters follow from the layout (``RoundEncoder``)."""
        return None

    def _scales(self) -> FloatVector:
        return np.concatenate(
            [
                np.full(f.length, 2.0**frac)
                for f, frac in zip(self.layout.fields, self.fractional_bits, strict=True)
            ]
        )

    def encode(
        self, vector: FloatVector, *, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> npt.NDArray[np.uint64]:
        """Clip, stochastically round and centre ``vector``; append the clip count."""
        size = self.layout.size
        if vector.shape != (size,) or not np.all(np.isfinite(vector)):
            raise ConfigError(f"input must be a finite vector of length {size}")
        bounds = self.layout.bounds()
        clipped = int(np.count_nonzero(np.abs(vector) > bounds))
        scaled = np.clip(vector, -bounds, bounds) * self._scales()
        low = np.floor(scaled)
        raw = np.frombuffer(random_bytes(8 * size), dtype="<u8")
        uniform = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
        q = low.astype(np.int64) + (uniform < scaled - low).astype(np.int64)
        out = np.empty(size + 1, dtype=np.uint64)
        out[:size] = q.view(np.uint64)
        out[size] = clipped
        if self.bits < 64:
            np.bitwise_and(out, np.uint64((1 << self.bits) - 1), out=out)
        return out

    def decode(self, total: npt.NDArray[np.uint64]) -> tuple[FloatVector, int]:
        """Centred decode of a sum in Z_{2^bits}: (float64 sums, total clipped count)."""
        if total.shape != (self.layout.size + 1,):
            raise ConfigError(f"sum must have length {self.layout.size + 1}")
        shift = np.uint64(64 - self.bits)  # sign-extend bit (bits - 1): no 2**bits overflow
        signed = (total << shift).view(np.int64) >> np.int64(64 - self.bits)
        values = signed[:-1].astype(np.float64) / self._scales()
        return values, int(signed[-1])

    def error_bound(self, n: int) -> FloatVector:
        """Per-coordinate bound on |decoded - exact sum of clipped inputs| for n summands."""
        per_field = [
            np.full(f.length, n * 2.0**-frac + n * f.bound * 2.0**-52)
            for f, frac in zip(self.layout.fields, self.fractional_bits, strict=True)
        ]
        return np.concatenate(per_field)
