"""Masks in Z_{2^bits} (Bonawitz et al. 2017, section 4, "MaskedInputCollection").

A site u with encoded input x_u, self-mask seed b_u and pairwise seeds s_{u,v}
(one per neighbour v that shared keys with it) sends

    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_{u,v}) - sum_{v < u} PRG(s_{u,v})   (mod 2^bits)

(">" is the order of site ids). For two survivors u, v the pairwise terms
cancel in the sum; the server removes PRG(b_u) for every survivor and, for a
site d that dropped after sharing keys, the orphaned terms PRG(s_{u,d}) after
rebuilding d's mask private key from t shares. Each PRG output is exactly
uniform (crypto.prg), so y_u alone is a one-time pad of x_u.

numpy uint64 arithmetic wraps modulo 2^64; since 2^bits divides 2^64 the
result reduced modulo 2^bits is the sum in Z_{2^bits}. The server keeps one
running sum of length m (O(m) memory, not O(n m)).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedmap_secure.crypto.hashing import encode_fields, encode_str
from fedmap_secure.crypto.labels import LABEL_PAIRWISE_MASK_EXPANSION, LABEL_SELF_MASK
from fedmap_secure.crypto.prg import expand_mask

Vector = npt.NDArray[np.uint64]


def modulus_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)


def self_mask(seed: bytes, *, session: bytes, site: str, length: int, bits: int) -> Vector:
    """PRG(b_u): expanded under LABEL_SELF_MASK with context (session id, site id)."""
    context = encode_fields(session, encode_str(site))
    return expand_mask(seed, label=LABEL_SELF_MASK, context=context, length=length, bits=bits)


def pairwise_mask(seed: bytes, *, session: bytes, length: int, bits: int) -> Vector:
    """PRG(s_uv): expanded under LABEL_PAIRWISE_MASK_EXPANSION with the session id as context."""
    return expand_mask(
        seed, label=LABEL_PAIRWISE_MASK_EXPANSION, context=session, length=length, bits=bits
    )


def pairwise_sign(site: str, peer: str) -> int:
    """+1 if ``site`` adds PRG(s_{site,peer}), -1 if it subtracts it."""
    return 1 if site < peer else -1


class RunningSum:
    """An accumulator in Z_{2^bits} of fixed length: the server's O(m) state."""

    def __init__(self, length: int, bits: int) -> None:
        self._bits = bits
        self._total = np.zeros(length, dtype=np.uint64)

    def add(self, vector: Vector, sign: int = 1) -> None:
        if sign == 1:
            np.add(self._total, vector, out=self._total)
        else:
            np.subtract(self._total, vector, out=self._total)

    def value(self) -> Vector:
        """The sum reduced modulo 2^bits (a fresh array)."""
        return np.bitwise_and(self._total, modulus_mask(self._bits))
