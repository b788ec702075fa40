"""Mask-expansion throughput: the keystream ciphers, expand_mask, and a client's add_masks.

Run: PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_prg.py

Prints best-of-5 wall times. The cipher lines call ``cryptography`` directly (benchmarks
may; the package itself reaches primitives only through crypto/_primitives.py) and
compare the two stream ciphers CRYPTO.md allows, writing into a preallocated buffer.
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedmap_secure.crypto.labels import LABEL_PAIRWISE_MASK_EXPANSION, LABEL_SELF_MASK
from fedmap_secure.crypto.prg import MaskTerm, add_masks, expand_mask, word_dtype

LENGTH = 1_000_000
NEIGHBOURS = 100
SEED = bytes(range(32))


def _best_ms(action: Callable[[], object], number: int = 3) -> float:
    return min(timeit.repeat(action, number=number, repeat=5)) / number * 1e3


def _keystream(make: Callable[[], Cipher[modes.CTR] | Cipher[None]], size: int) -> float:
    zeros, out = bytes(size), bytearray(size + 15)

    def run() -> None:
        make().encryptor().update_into(zeros, out)

    return _best_ms(run)


def ciphers() -> None:
    key = os.urandom(32)
    for size in (4 * LENGTH, 8 * LENGTH):
        aes = _keystream(lambda: Cipher(algorithms.AES(key), modes.CTR(bytes(16))), size)
        chacha = _keystream(lambda: Cipher(algorithms.ChaCha20(key, bytes(16)), None), size)
        print(
            f"keystream {size / 1e6:.0f} MB: AES-256-CTR {aes:.2f} ms "
            f"({size / aes / 1e6:.1f} GB/s), ChaCha20 {chacha:.2f} ms "
            f"({size / chacha / 1e6:.1f} GB/s)"
        )


def client_masking(bits: int) -> float:
    """add_masks of 1 self + NEIGHBOURS pairwise masks into a LENGTH-word vector."""
    terms = [MaskTerm(seed=os.urandom(32), label=LABEL_SELF_MASK, context=b"s")] + [
        MaskTerm(
            seed=os.urandom(32),
            label=LABEL_PAIRWISE_MASK_EXPANSION,
            context=b"s",
            sign=1 - 2 * (i % 2),
        )
        for i in range(NEIGHBOURS)
    ]
    out = np.zeros(LENGTH, dtype=word_dtype(bits))
    return _best_ms(lambda: add_masks(out, terms, bits=bits), number=1)


def _expand(bits: int) -> None:
    expand_mask(SEED, label=LABEL_SELF_MASK, context=b"bench", length=LENGTH, bits=bits)


def main() -> None:
    ciphers()
    for bits in (32, 64):
        ms = _best_ms(partial(_expand, bits))
        print(f"expand_mask length={LENGTH} bits={bits}: {ms:.1f} ms")
    for bits in (32, 64):
        ms = client_masking(bits)
        print(f"add_masks 1 + {NEIGHBOURS} masks of {LENGTH} values, bits={bits}: {ms:.0f} ms")


if __name__ == "__main__":
    main()
