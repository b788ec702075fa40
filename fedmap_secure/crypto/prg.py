"""Mask expansion: a 256-bit seed to a vector of exactly uniform ``bits``-bit integers.

Recipe (the PRG of Bonawitz et al. CCS 2017, section 4, instantiated with AES-256-CTR):

    K     = HKDF-SHA256(ikm = seed, salt = none, info = encode_fields(label, context), L = 32)
    S     = AES-256-CTR keystream under K, initial counter block 0^128 (SP 800-38A)
    w     = 4 if bits <= 32 else 8                              bytes per word
    w_i   = uint_le(S[w i : w i + w])                           i = 0 .. length - 1
    out_i = w_i mod 2^bits  (= w_i AND (2^bits - 1))

Exact uniformity: if S is uniform then every w_i is uniform on [0, 2^(8w)), and
because 2^bits divides 2^(8w) the reduction mod 2^bits maps exactly 2^(8w-bits)
words to each residue, so ``out_i`` is exactly uniform on [0, 2^bits) with no
modulo bias and no rejection step. Words of 32 bits for rings up to 2^32 halve
the keystream (and memory traffic) that each mask costs.

Assumptions: AES-256 is a pseudorandom permutation (hence, up to the birthday
term q^2 / 2^129 for q blocks, a PRF: below 2^-61 for the 2^35-value limit) and
HKDF-SHA256 a PRF/extractor, so the output is computationally indistinguishable
from uniform to anyone not knowing the seed. The seed must be 32 bytes of full
entropy (a pairwise agreed key or a site's self-mask seed); all 256 bits enter
HKDF, and K is a full 256-bit AES key. Each (seed, label, context) gives a fresh
key, so the fixed zero initial counter never repeats a (key, counter) pair
across purposes; callers must not expand the same (seed, label, context) for
two different vectors.

Threat addressed: the masks are one-time pads on the quantised updates in
Z_{2^bits}; a predictable or biased mask would leak a site's update to the
server. (Flower's SecAgg+ folds the seed to 32 bits and feeds a non-cryptographic
generator; here the full seed keys a block cipher in counter mode.)

Speed: ``add_masks`` sums many masks into one vector chunk by chunk, so each
keystream chunk is added while still in cache and no mask is ever held whole.
Given ``Workers`` (an executor injected by the caller, e.g. a thread pool), it
splits the terms into groups summed side by side, each into its own accumulator,
and adds the partial sums at the end: AES-CTR (``cryptography`` releases the GIL
for a long ``update_into``) and numpy's adds then run on several cores. The
result is the same bits whatever the grouping: addition modulo the word size is
associative and commutative.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import encode_fields
from fedmap_secure.crypto.labels import require_label
from fedmap_secure.errors import CryptoError

SEED_SIZE = 32
"""Seeds are 256-bit keys."""
MAX_LENGTH = 2**35
"""Largest ``length`` one seed may expand to (keeps the AES birthday term below 2^-61)."""
CHUNK_BYTES = 1 << 18
"""Keystream bytes per chunk in ``add_masks`` (65,536 32-bit or 32,768 64-bit words): a chunk
of output, one of keystream and the zero input of AES-CTR stay in L2 cache (measured: 64-bit
masks were 1-4 % slower with 512 KiB chunks)."""
TERM_BATCH = 256
"""Terms expanded side by side in ``add_masks`` (bounds the live cipher states)."""

MaskWords = npt.NDArray[np.uint32] | npt.NDArray[np.uint64]
_T = TypeVar("_T")
_R = TypeVar("_R")


class MapExecutor(Protocol):
    """What ``add_masks`` needs of an executor: ``concurrent.futures.Executor.map``."""

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T], /) -> Iterator[_R]: ...


@dataclass(frozen=True, kw_only=True)
class Workers:
    """An injected executor and how many groups of terms to give it (>= 1).

    This module never starts threads itself (sans-I/O): the caller owns the pool,
    e.g. ``Workers(executor=ThreadPoolExecutor(2), count=2)``.
    """

    executor: MapExecutor
    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"worker count must be a positive int, got {self.count!r}")


def word_dtype(bits: int) -> np.dtype[np.uint32] | np.dtype[np.uint64]:
    """The word a mask in Z_{2^bits} is drawn from: uint32 if bits <= 32, else uint64.

    ``ValueError`` if ``bits`` is not in 1..64.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits!r}")
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def derive_stream_key(seed: bytes, *, label: bytes, context: bytes) -> bytes:
    """The AES-256 key K = HKDF-SHA256(seed, info=encode_fields(label, context))."""
    require_label(label)
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_SIZE:
        raise CryptoError(f"mask seed must be {SEED_SIZE} bytes")
    info = encode_fields(label, bytes(context))
    return _primitives.hkdf_sha256(bytes(seed), salt=None, info=info, length=SEED_SIZE)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MaskTerm:
    """One term ``sign * PRG(seed; label, context)`` of a sum of masks.

    ``repr`` shows only the label and sign: the seed is a secret.
    """

    seed: bytes
    label: bytes
    context: bytes
    sign: int = 1

    def __post_init__(self) -> None:
        require_label(self.label)
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_SIZE:
            raise CryptoError(f"mask seed must be {SEED_SIZE} bytes")
        if not isinstance(self.context, bytes):
            raise ValueError("mask context must be bytes")
        if isinstance(self.sign, bool) or self.sign not in (1, -1):
            raise ValueError(f"mask sign must be +1 or -1, got {self.sign!r}")

    def __repr__(self) -> str:
        return f"MaskTerm(label={self.label.decode()!r}, sign={self.sign:+d})"


def add_masks(
    out: MaskWords, terms: Sequence[MaskTerm], *, bits: int, workers: Workers | None = None
) -> None:
    """In place: ``out <- (out + sum_j sign_j * PRG(seed_j)) mod 2^bits``.

    ``out`` is a writable, contiguous 1-D array of ``word_dtype(bits)`` with at
    most MAX_LENGTH entries; every PRG(seed_j) has ``len(out)`` values. The
    keystreams are consumed chunk by chunk (CHUNK_BYTES bytes at a time), for
    TERM_BATCH terms at a time: the cost is the AES keystream plus one in-cache
    add per word and term, and the extra memory is one chunk and TERM_BATCH
    cipher states, whatever the number of terms. Adding full words and reducing
    once at the end is exact because 2^bits divides the word modulus.

    With ``workers``, the terms are split into ``workers.count`` contiguous groups
    (fewer if there are fewer terms); group 0 is added into ``out`` and every other
    group into a fresh zero vector, the groups run through ``workers.executor``,
    and the partial sums are then added into ``out``: extra memory
    (count - 1) * len(out) words, same result bit for bit.
    """
    dtype = word_dtype(bits)
    _check_output(out, dtype)
    groups = 1 if workers is None else max(1, min(workers.count, len(terms)))
    if groups == 1:
        _add_terms(out, terms, dtype)
    else:
        assert workers is not None
        bounds = [len(terms) * g // groups for g in range(groups + 1)]
        sums: list[MaskWords] = [out, *(np.zeros_like(out) for _ in range(groups - 1))]
        jobs = [(sums[g], terms[bounds[g] : bounds[g + 1]]) for g in range(groups)]
        for _ in workers.executor.map(lambda job: _add_terms(job[0], job[1], dtype), jobs):
            pass  # re-raises a worker's exception here
        for partial in sums[1:]:
            np.add(out, partial, out=out)
    if bits < 8 * dtype.itemsize:
        np.bitwise_and(out, dtype.type((1 << bits) - 1), out=out)


def _add_terms(
    out: MaskWords, terms: Sequence[MaskTerm], dtype: np.dtype[np.uint32] | np.dtype[np.uint64]
) -> None:
    """out += sum of the terms' full words (mod the word size), TERM_BATCH terms at a time."""
    scratch = bytearray(_chunk_words(dtype) * dtype.itemsize + _primitives.KEYSTREAM_SLACK)
    try:
        for first in range(0, len(terms), TERM_BATCH):
            _add_batch(out, terms[first : first + TERM_BATCH], scratch, dtype)
    finally:
        scratch[:] = bytes(len(scratch))  # do not leave keystream (mask) bytes behind


def _add_batch(
    out: MaskWords,
    terms: Sequence[MaskTerm],
    scratch: bytearray,
    dtype: np.dtype[np.uint32] | np.dtype[np.uint64],
) -> None:
    """out += sum of the terms' full words (mod the word size), one chunk at a time."""
    width, step = dtype.itemsize, _chunk_words(dtype)
    streams = [(_primitives.Aes256CtrKeystream(_stream_key(t)), t.sign > 0) for t in terms]
    words = np.frombuffer(scratch, dtype=dtype.newbyteorder("<"), count=step)
    for start in range(0, out.shape[0], step):
        part = out[start : start + step]
        chunk = words[: part.shape[0]]
        for stream, positive in streams:
            stream.read_into(scratch, part.shape[0] * width)
            if positive:
                np.add(part, chunk, out=part)
            else:
                np.subtract(part, chunk, out=part)


def _chunk_words(dtype: np.dtype[np.uint32] | np.dtype[np.uint64]) -> int:
    return max(1, CHUNK_BYTES // dtype.itemsize)


def _stream_key(term: MaskTerm) -> bytes:
    return derive_stream_key(term.seed, label=term.label, context=term.context)


def _check_output(out: MaskWords, dtype: np.dtype[np.uint32] | np.dtype[np.uint64]) -> None:
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.ndim != 1:
        raise ValueError(f"mask accumulator must be a 1-D {dtype.name} array")
    if not (out.flags.writeable and out.flags.c_contiguous):
        raise ValueError("mask accumulator must be writable and contiguous")
    if out.shape[0] > MAX_LENGTH:
        raise ValueError(f"length must be in 0..{MAX_LENGTH}, got {out.shape[0]}")


def expand_mask(
    seed: bytes, *, label: bytes, context: bytes, length: int, bits: int
) -> npt.NDArray[np.uint64]:
    """Return ``length`` values, exactly uniform in [0, 2^bits), as a fresh uint64 array.

    ``ValueError`` if ``bits`` is not in 1..64 or ``length`` not in 0..MAX_LENGTH;
    ``CryptoError`` if ``seed`` is not 32 bytes. (The hot paths use ``add_masks``.)
    """
    dtype = word_dtype(bits)
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be in 0..{MAX_LENGTH}, got {length!r}")
    raw = bytes(seed) if isinstance(seed, bytes | bytearray) else seed
    term = MaskTerm(seed=raw, label=label, context=bytes(context))
    out = np.zeros(length, dtype=dtype)
    add_masks(out, [term], bits=bits)
    return out.astype(np.uint64, copy=False)
