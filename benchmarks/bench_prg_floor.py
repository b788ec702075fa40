"""How far the server's mask removal is from its AES-CTR floor, in one process.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_prg_floor.py --terms 786 --m 1000000 --bits 64

The default is the n = 100, m = 10^6 cell at the shipped model with 10 % dropout: the server
removes 786 masks (90 survivors' self masks, 696 pairwise masks of the 10 dropped sites). Timed
side by side, best of ``--reps`` (CPU seconds, ``time.process_time``):

- ``keystream``: the AES-256-CTR keystream alone of ``terms`` x m words, one stream per term
  (key derivation and cipher set-up included), read in the chunks ``add_masks`` uses: the
  floor, what ``cryptography``/OpenSSL cost to produce the masks' bytes;
- ``add_masks``: ``crypto.prg.add_masks`` over the same terms (serial): the keystream plus one
  in-cache add (or subtract) per word and term.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from fedmap_secure.crypto import _primitives, prg
from fedmap_secure.crypto.prg import MaskTerm, add_masks, derive_stream_key, word_dtype
from fedmap_secure.secagg.masking import pairwise_mask_term


def best(action: Callable[[], object], reps: int) -> float:
    fastest = float("inf")
    for _ in range(reps):
        start = time.process_time()
        action()
        fastest = min(fastest, time.process_time() - start)
    return fastest


def keystream_only(terms: list[MaskTerm], m: int, bits: int) -> None:
    width = word_dtype(bits).itemsize
    step = max(1, prg.CHUNK_BYTES // width) * width
    scratch = bytearray(step + _primitives.KEYSTREAM_SLACK)
    for term in terms:
        key = derive_stream_key(term.seed, label=term.label, context=term.context)
        stream = _primitives.Aes256CtrKeystream(key)
        for start in range(0, m * width, step):
            stream.read_into(scratch, min(step, m * width - start))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=786)
    parser.add_argument("--m", type=int, default=10**6)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    terms = [
        pairwise_mask_term(os.urandom(32), session=bytes(32), sign=1 - 2 * (i % 2))
        for i in range(args.terms)
    ]
    out = np.zeros(args.m, dtype=word_dtype(args.bits))
    floor = best(lambda: keystream_only(terms, args.m, args.bits), args.reps)
    full = best(lambda: add_masks(out, terms, bits=args.bits), args.reps)
    gigabytes = args.terms * args.m * word_dtype(args.bits).itemsize / 1e9
    print(
        "| terms | m | bits | keystream GB | keystream only | add_masks "
        "| add_masks / keystream | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.terms} | {args.m:.0e} | {args.bits} | {gigabytes:.2f} | {floor:.3f} s "
        f"({gigabytes / floor:.1f} GB/s) | {full:.3f} s | {full / floor:.2f} | "
        f"{os.getloadavg()[0]:.1f} |"
    )


if __name__ == "__main__":
    main()
