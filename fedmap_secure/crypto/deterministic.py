"""A deterministic ``random_bytes`` for test vectors and reproducible tests. NOT for secrets.

``DeterministicRandom(seed)`` returns the byte stream

    SHA-256(encode_fields(LABEL_TEST_STREAM, seed, uint64_be(0))) ||
    SHA-256(encode_fields(LABEL_TEST_STREAM, seed, uint64_be(1))) || ...

consumed left to right by successive calls. Anyone who knows ``seed`` knows
every output, so production code must keep the ``os.urandom`` default; this
class exists so protocol/vectors/*.json can state their randomness exactly and
another implementation can reproduce them.
"""

from __future__ import annotations

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import encode_fields
from fedmap_secure.crypto.labels import LABEL_TEST_STREAM


class DeterministicRandom:
    """Callable ``(n) -> n bytes`` reading a SHA-256 counter-mode stream from ``seed``."""

    def __init__(self, seed: bytes) -> None:
        self._seed = bytes(seed)
        self._counter = 0
        self._buffer = b""

    def __call__(self, n: int) -> bytes:
        if n < 0:
            raise ValueError(f"cannot draw {n} bytes")
        while len(self._buffer) < n:
            block = encode_fields(LABEL_TEST_STREAM, self._seed, self._counter.to_bytes(8, "big"))
            self._buffer += _primitives.sha256(block)
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def __repr__(self) -> str:
        return f"DeterministicRandom(counter={self._counter})"
