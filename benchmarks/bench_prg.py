"""Time prg.expand_mask on 10^6 values at 32 and 64 bits (best of several runs).

Run: PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_prg.py
"""

from __future__ import annotations

import functools
import timeit

from fedmap_secure.crypto.labels import LABEL_SELF_MASK
from fedmap_secure.crypto.prg import expand_mask

LENGTH = 1_000_000
SEED = bytes(range(32))


def _expand(bits: int) -> None:
    expand_mask(SEED, label=LABEL_SELF_MASK, context=b"bench", length=LENGTH, bits=bits)


def main() -> None:
    for bits in (32, 64):
        runs = timeit.repeat(functools.partial(_expand, bits), number=5, repeat=5)
        print(f"expand_mask length={LENGTH} bits={bits}: {min(runs) / 5 * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
