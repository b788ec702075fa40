"""Mask expansion: a 256-bit seed to a vector of exactly uniform ``bits``-bit integers.

Recipe (the PRG of Bonawitz et al. CCS 2017, section 4, instantiated with ChaCha20):

    K     = HKDF-SHA256(ikm = seed, salt = none, info = encode_fields(label, context), L = 32)
    S     = ChaCha20(K, nonce = 12 zero bytes, counter from 0)   first 8 * length bytes
    w_i   = uint64_le(S[8i : 8i + 8])                           i = 0 .. length - 1
    out_i = w_i mod 2^bits  (= w_i AND (2^bits - 1))

Exact uniformity: if S is uniform then every w_i is uniform on [0, 2^64), and
because 2^bits divides 2^64 the reduction mod 2^bits maps exactly 2^(64-bits)
words to each residue, so ``out_i`` is exactly uniform on [0, 2^bits) with no
modulo bias and no rejection step.

Assumptions: ChaCha20 is a PRF and HKDF-SHA256 a PRF/extractor, so the output
is computationally indistinguishable from uniform to anyone not knowing the
seed. The seed must be 32 bytes of full entropy (a pairwise agreed key or a
site's self-mask seed); all 256 bits enter HKDF. Each (seed, label, context)
gives a fresh ChaCha20 key, so the fixed zero nonce is never reused with a key
across different purposes; callers must not expand the same
(seed, label, context) for two different vectors.

Threat addressed: the masks are one-time pads on the quantised updates in
Z_{2^bits}; a predictable or biased mask would leak a site's update to the
server. (Flower's SecAgg+ folds the seed to 32 bits and feeds a non-cryptographic
generator; here the full seed keys a stream cipher.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import encode_fields
from fedmap_secure.crypto.labels import require_label
from fedmap_secure.errors import CryptoError

SEED_SIZE = 32
"""Seeds are 256-bit keys."""
WORD_SIZE = 8
MAX_LENGTH = _primitives.CHACHA20_MAX_KEYSTREAM // WORD_SIZE
"""Largest ``length`` one seed can expand to (2^35 values, the RFC 8439 counter limit)."""
_ZERO_NONCE = bytes(_primitives.CHACHA20_NONCE_SIZE)


def derive_stream_key(seed: bytes, *, label: bytes, context: bytes) -> bytes:
    """The ChaCha20 key K = HKDF-SHA256(seed, info=encode_fields(label, context))."""
    require_label(label)
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_SIZE:
        raise CryptoError(f"mask seed must be {SEED_SIZE} bytes")
    info = encode_fields(label, bytes(context))
    return _primitives.hkdf_sha256(bytes(seed), salt=None, info=info, length=SEED_SIZE)


def expand_mask(
    seed: bytes, *, label: bytes, context: bytes, length: int, bits: int
) -> npt.NDArray[np.uint64]:
    """Return ``length`` values, exactly uniform in [0, 2^bits), as a fresh uint64 array.

    ``ValueError`` if ``bits`` is not in 1..64 or ``length`` not in 0..MAX_LENGTH;
    ``CryptoError`` if ``seed`` is not 32 bytes.
    """
    if isinstance(bits, bool) or not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, got {bits!r}")
    if isinstance(length, bool) or not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be in 0..{MAX_LENGTH}, got {length!r}")
    key = derive_stream_key(seed, label=label, context=context)
    words = _primitives.chacha20_keystream_words(key, _ZERO_NONCE, length)
    if bits < 64:
        np.bitwise_and(words, np.uint64((1 << bits) - 1), out=words)
    return words
