"""Unambiguous encoding and labelled SHA-256 digests.

``encode_fields(p_1, ..., p_k)`` is the concatenation, for each part, of its
length as a 4-byte big-endian unsigned integer followed by its bytes::

    encode_fields(p_1, ..., p_k) = len(p_1) || p_1 || ... || len(p_k) || p_k

The encoding is injective on tuples of the same arity (and, since the arity is
fixed by each use site, on every input the protocol hashes): no two different
tuples encode to the same bytes, so ``("ab", "c")`` and ``("a", "bc")`` hash
differently. This closes the canonicalisation ambiguity that plain
concatenation would leave for an attacker who controls one field (e.g. a site
name).

``digest(p_1, ..., p_k, label=L) = SHA-256(encode_fields(L, p_1, ..., p_k))``.
The label (labels.py) domain-separates digests of different purposes: a
session id can never equal a transcript hash of the same bytes. Security
rests on SHA-256 collision and preimage resistance.
"""

from __future__ import annotations

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.labels import require_label

MAX_FIELD_SIZE = 2**32 - 1
"""Largest part ``encode_fields`` accepts (its length must fit in 4 bytes)."""
DIGEST_SIZE = _primitives.SHA256_SIZE
_BYTES_LIKE = (bytes, bytearray, memoryview)


def encode_fields(*parts: bytes) -> bytes:
    """Length-prefix each part (4-byte big-endian length) and concatenate.

    Raises ``TypeError`` for a non-bytes part and ``ValueError`` for a part
    longer than 2^32 - 1 bytes.
    """
    pieces: list[bytes] = []  # one join at the end (a hot path: every agreement and mask key)
    for position, part in enumerate(parts):
        raw = part
        if type(raw) is not bytes:
            if not isinstance(raw, _BYTES_LIKE):
                raise TypeError(f"field {position} must be bytes, got {type(raw).__name__}")
            raw = bytes(raw)
        size = len(raw)
        if size > MAX_FIELD_SIZE:
            raise ValueError(f"field {position} is longer than {MAX_FIELD_SIZE} bytes")
        pieces.append(size.to_bytes(4, "big"))
        pieces.append(raw)
    return b"".join(pieces)


def digest(*parts: bytes, label: bytes) -> bytes:
    """SHA-256 over ``encode_fields(label, *parts)``; 32 bytes."""
    require_label(label)
    return _primitives.sha256(encode_fields(label, *parts))


def encode_str(text: str) -> bytes:
    """UTF-8 bytes of ``text`` (the one text encoding used inside encoded fields)."""
    return text.encode("utf-8")


def encode_uint(value: int, *, size: int = 8) -> bytes:
    """``value`` as a ``size``-byte big-endian unsigned integer (``ValueError`` if it won't fit)."""
    if isinstance(value, bool) or value < 0 or value >= 1 << (8 * size):
        raise ValueError(f"{value!r} does not fit in {size} unsigned bytes")
    return value.to_bytes(size, "big")
