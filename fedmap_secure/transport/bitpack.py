"""Unsigned integers packed to a fixed bit width: the wire form of masked vectors.

``pack(values, width)`` writes value i into bits ``[i w, (i + 1) w)`` of a
little-endian bit stream (bit j of the stream is bit ``j mod 8`` of byte
``j // 8``; each value least significant bit first), ``ceil(m w / 8)`` bytes
with the unused high bits of the last byte zero. Widths 8, 16, 32 and 64 are
therefore exactly the little-endian arrays of that word size. ``unpack``
inverts it and refuses any other length or non-zero padding, so the encoding
is canonical (one byte string per vector).

A masked input in Z_{2^b} packed at w = b takes m b / 8 bytes instead of the
8 m of fixed 64-bit words (half at b = 32). Work is done in blocks of
``BLOCK`` values, so the scratch memory is O(BLOCK * 64) bytes whatever m is.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BLOCK = 1 << 15
"""Values per block (a multiple of 8, so every block starts on a byte boundary)."""
_WORDS = {8: "<u1", 16: "<u2", 32: "<u4", 64: "<u8"}


def packed_size(count: int, width: int) -> int:
    """Bytes of ``count`` values packed at ``width`` bits."""
    return (count * width + 7) // 8


def pack(values: npt.NDArray[np.uint64], width: int) -> bytes:
    """The values (each below 2^width) packed at ``width`` bits; ``ValueError`` otherwise."""
    _check_width(width)
    if values.ndim != 1 or values.dtype != np.uint64:
        raise ValueError("pack needs a 1-D uint64 array")
    if width < 64 and values.size and int(values.max()) >> width:
        raise ValueError(f"a value does not fit in {width} bits")
    if width in _WORDS:
        return np.ascontiguousarray(values, dtype=_WORDS[width]).tobytes()
    out = bytearray()
    for start in range(0, values.size, BLOCK):
        block = np.ascontiguousarray(values[start : start + BLOCK], dtype="<u8")
        bits = np.unpackbits(block.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
        out += np.packbits(bits[:, :width].reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack(data: bytes, width: int, count: int) -> npt.NDArray[np.uint64]:
    """``count`` values packed at ``width`` bits; ``ValueError`` unless ``data`` is canonical.

    At width 64 from ``bytes`` the result is a read-only view of ``data`` (no copy)."""
    _check_width(width)
    if count < 0 or len(data) != packed_size(count, width):
        raise ValueError(
            f"{len(data)} bytes do not hold {count} values of {width} bits "
            f"({packed_size(count, width)} bytes expected)"
        )
    if width in _WORDS:  # 64 bits from ``bytes``: a read-only view, no copy (bytes are immutable)
        words = np.frombuffer(data, dtype=_WORDS[width])
        return words.astype(np.uint64, copy=not isinstance(data, bytes))
    tail = (count * width) % 8
    if tail and data[-1] >> tail:
        raise ValueError("non-zero padding bits after the last value")
    out = np.empty(count, dtype=np.uint64)
    step = BLOCK * width // 8
    raw = np.frombuffer(data, dtype=np.uint8)
    for block, start in enumerate(range(0, count, BLOCK)):
        n = min(BLOCK, count - start)
        chunk = raw[block * step : block * step + packed_size(n, width)]
        bits = np.unpackbits(chunk, bitorder="little")[: n * width].reshape(n, width)
        full = np.zeros((n, 64), dtype=np.uint8)
        full[:, :width] = bits
        out[start : start + n] = np.packbits(full, axis=1, bitorder="little").view("<u8")[:, 0]
    return out


def _check_width(width: int) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 64:
        raise ValueError(f"width must be in 1..64, got {width!r}")
