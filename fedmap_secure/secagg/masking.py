"""Masks in Z_{2^bits} (Bonawitz et al. 2017, section 4, "MaskedInputCollection").

A site u with encoded input x_u, self-mask seed b_u and pairwise seeds s_{u,v}
(one per neighbour v that shared keys with it) sends

    y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_{u,v}) - sum_{v < u} PRG(s_{u,v})   (mod 2^bits)

(">" is the order of site ids). For two survivors u, v the pairwise terms
cancel in the sum; the server removes PRG(b_u) for every survivor and, for a
site d that dropped after sharing keys, the orphaned terms PRG(s_{u,d}) after
rebuilding d's mask private key from t shares. Each PRG output is exactly
uniform (crypto.prg), so y_u alone is a one-time pad of x_u.

Arithmetic runs in the PRG's word (``crypto.prg.word_dtype``: uint32 for
bits <= 32, else uint64); numpy wraps modulo 2^32 or 2^64, and since 2^bits
divides that modulus the result reduced modulo 2^bits is the sum in
Z_{2^bits}. Messages always carry uint64 values. All masks of one party are
summed in one chunked pass (``crypto.prg.add_masks``), so no mask is held
whole; the server keeps one running sum of length m (O(m) memory, not O(n m)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import numpy.typing as npt

from fedmap_secure.crypto.hashing import encode_fields, encode_str
from fedmap_secure.crypto.labels import LABEL_PAIRWISE_MASK_EXPANSION, LABEL_SELF_MASK
from fedmap_secure.crypto.prg import (
    MaskTerm,
    MaskWords,
    Workers,
    add_masks,
    expand_mask,
    word_dtype,
)

Vector = npt.NDArray[np.uint64]


def modulus_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)


def self_mask_term(seed: bytes, *, session: bytes, site: str, sign: int = 1) -> MaskTerm:
    """sign * PRG(b_u): expanded under LABEL_SELF_MASK with context (session id, site id)."""
    context = encode_fields(session, encode_str(site))
    return MaskTerm(seed=seed, label=LABEL_SELF_MASK, context=context, sign=sign)


def pairwise_mask_term(seed: bytes, *, session: bytes, sign: int) -> MaskTerm:
    """sign * PRG(s_uv): expanded under LABEL_PAIRWISE_MASK_EXPANSION, context the session id."""
    return MaskTerm(seed=seed, label=LABEL_PAIRWISE_MASK_EXPANSION, context=session, sign=sign)


def self_mask(seed: bytes, *, session: bytes, site: str, length: int, bits: int) -> Vector:
    """PRG(b_u) as a whole vector (for tests and vectors; rounds use ``apply_masks``)."""
    term = self_mask_term(seed, session=session, site=site)
    return expand_mask(term.seed, label=term.label, context=term.context, length=length, bits=bits)


def pairwise_mask(seed: bytes, *, session: bytes, length: int, bits: int) -> Vector:
    """PRG(s_uv) as a whole vector (for tests and vectors; rounds use ``apply_masks``)."""
    return expand_mask(
        seed, label=LABEL_PAIRWISE_MASK_EXPANSION, context=session, length=length, bits=bits
    )


def pairwise_sign(site: str, peer: str) -> int:
    """+1 if ``site`` adds PRG(s_{site,peer}), -1 if it subtracts it."""
    return 1 if site < peer else -1


def apply_masks(
    vector: Vector, terms: Sequence[MaskTerm], *, bits: int, workers: Workers | None = None
) -> Vector:
    """(vector + sum of the terms) mod 2^bits as a fresh uint64 array; ``vector`` is unchanged.

    ``workers``: an injected executor for the PRG work (``crypto.prg.add_masks``).
    """
    work = cast(MaskWords, vector.astype(word_dtype(bits)))
    add_masks(work, terms, bits=bits, workers=workers)
    return work.astype(np.uint64, copy=False)


class RunningSum:
    """An accumulator in Z_{2^bits} of fixed length: the server's O(m) state.

    Held in the PRG word type, so masks are added without widening.
    """

    def __init__(self, length: int, bits: int) -> None:
        self._bits = bits
        self._total: MaskWords = np.zeros(length, dtype=word_dtype(bits))

    def add(self, vector: Vector, sign: int = 1) -> None:
        """Add (sign = 1) or subtract (-1) a uint64 vector, modulo the word size.

        A uint64 vector is first reduced to a uint32 one (mod 2^32) when the sum is held
        in 32-bit words: the same result as a casting add, about four times faster."""
        if vector.dtype != self._total.dtype:
            vector = vector.astype(self._total.dtype)
        if sign == 1:
            np.add(self._total, vector, out=self._total)
        else:
            np.subtract(self._total, vector, out=self._total)

    def add_masks(self, terms: Sequence[MaskTerm], *, workers: Workers | None = None) -> None:
        """Add sum_j sign_j * PRG(seed_j) in one chunked pass (no whole mask is materialised);
        with ``workers``, groups of terms are expanded side by side (``crypto.prg.add_masks``)."""
        add_masks(self._total, terms, bits=self._bits, workers=workers)

    def value(self) -> Vector:
        """The sum reduced modulo 2^bits (a fresh uint64 array)."""
        return self._reduced(self._total.astype(np.uint64))

    def take(self) -> Vector:
        """``value()`` handing over the accumulator (no copy in 64-bit words); the sum is
        left empty (length 0): the server's last use of the round's sum."""
        total, self._total = self._total, self._total[:0]
        return self._reduced(total.astype(np.uint64, copy=False))

    def _reduced(self, out: Vector) -> Vector:
        """``out`` mod 2^bits in place: only needed when bits < the word's width (a word
        of exactly ``bits`` bits already wraps modulo 2^bits)."""
        if self._bits < 8 * self._total.dtype.itemsize:
            np.bitwise_and(out, modulus_mask(self._bits), out=out)
        return out
