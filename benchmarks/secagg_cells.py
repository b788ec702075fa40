"""Measure one cell (n, m, dropout) of the SecAgg+ benchmark grid; print one JSON object.

Run by bench_secagg.py in a fresh process per cell (so ``ru_maxrss`` is the cell's own
peak). Two ways to measure, always stated in the output's ``method``:

- ``round`` (measured): a real round among n in-process ``ClientSession``s and one
  ``ServerSession``, every stage, with floor(dropout * n) sites dropping after sharing
  keys (they send no masked input, so the server rebuilds their mask keys and removes
  their pairwise masks: the expensive recovery path). Each party's calls are timed
  separately; inputs are made just before ``submit_input`` and dropped after, so the
  process holds O(m) vectors at a time.
- ``components`` (n = 1000): the client's masking (k agreements + k + 1 chunked PRG
  expansions of m words, the exact library calls of ``ClientSession._mask``) and the
  server's running sum are measured directly; the server's PRG work is measured on up
  to ``PRG_SAMPLE`` mask terms and scaled to the real count (from the real neighbour
  graph); Shamir, signatures, agreements, envelopes are measured per unit and
  multiplied by their counts. Every figure says whether it was measured or computed.

The plain baseline is the unmasked sum of the same n' survivors' vectors (float64,
``np.add`` into one accumulator), timed in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
import tracemalloc
from functools import partial
from typing import Any

import numpy as np
from secagg_round import (
    SESSION,
    best,
    dropped_sites,
    encoded_input,
    per_call,
    prg_seconds,
    run_round,
    site_names,
)

from fedmap_secure.crypto import shamir
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree
from fedmap_secure.crypto.envelope import envelope_ad, open_sealed, seal
from fedmap_secure.crypto.labels import LABEL_CONSISTENCY, LABEL_PAIRWISE_MASK
from fedmap_secure.crypto.signing import IdentityKey, verify
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.graph import neighbour_graph
from fedmap_secure.secagg.masking import (
    RunningSum,
    apply_masks,
    pairwise_mask_term,
    self_mask_term,
)
from fedmap_secure.secagg.messages import MaskedInput

PRG_SAMPLE = 200
"""Server PRG terms actually expanded in components mode before scaling."""
Json = dict[str, Any]
wall_best = partial(best, clock=time.perf_counter)
wall_per_call = partial(per_call, reps=40, clock=time.perf_counter)


def config_for(n: int, dropout: float, bits: int) -> SecAggConfig:
    """The deployment's config: tolerates max(dropout, 10%) dropouts and 10% corrupt sites."""
    return SecAggConfig.for_threat_model(
        n=n, dropout_fraction=max(dropout, 0.1), corrupt_fraction=0.1, bits=bits
    )


def plain_sum_seconds(survivors: int, m: int) -> float:
    """Time of np.add-ing ``survivors`` float64 vectors of length m into one accumulator."""
    rng = np.random.default_rng(0)
    vectors = [rng.standard_normal(m) for _ in range(min(survivors, 8))]
    total = np.zeros(m)
    start = time.perf_counter()
    for i in range(survivors):
        np.add(total, vectors[i % len(vectors)], out=total)
    return time.perf_counter() - start


def measure_round(n: int, m: int, dropout: float, bits: int) -> Json:
    """A real round among n in-process parties (``secagg_round.run_round``), wall seconds."""
    config = config_for(n, dropout, bits)
    result = run_round(n, m, dropout, config)
    client_times = list(result["client_wall_s"].values())
    return {
        "method": "round",
        "client_s": statistics.median(client_times),
        "client_masking_s": statistics.median(result["masking_wall_s"].values()),
        "client_max_s": max(client_times),
        "server_s": result["server_wall_s"],
        "server_parts_s": result["server_parts_wall_s"],
        "survivors": result["survivors"],
        "plain_sum_s": plain_sum_seconds(result["survivors"], m),
        "config": {"k": config.k, "t": config.t, "quorum": config.quorum},
    }


def client_masking_seconds(k: int, m: int, bits: int) -> float:
    """The steps of ClientSession._mask: range check, k X25519+HKDF agreements,
    apply_masks over k + 1 terms, and the MaskedInput message (which copies y)."""
    mine = AgreementKeyPair.generate()
    peers = [AgreementKeyPair.generate().public for _ in range(k)]
    x = encoded_input(0, m, bits)
    limit = np.uint64((1 << bits) - 1)

    def mask() -> None:
        if bits < 64 and bool(np.any(x > limit)):
            raise AssertionError("input out of range")
        terms = [self_mask_term(os.urandom(32), session=SESSION, site="s0000")]
        for i, peer in enumerate(peers):
            seed = agree(mine, peer, label=LABEL_PAIRWISE_MASK, context=SESSION)
            terms.append(pairwise_mask_term(seed, session=SESSION, sign=1 - 2 * (i % 2)))
        y = apply_masks(x, terms, bits=bits)
        MaskedInput(version=1, session_id=SESSION, round_index=0, sender="s0000", masked=y)

    return best(mask, clock=time.perf_counter)


def unit_costs(t: int, h: int, used: int) -> dict[str, float]:
    """Seconds per unit operation of the m-independent protocol work (measured).

    ``shamir_combine`` is given ``used`` shares, as many as the server holds for one
    secret (the holders that answered); the ones beyond t are checked for consistency.
    """
    mine, other = AgreementKeyPair.generate(), AgreementKeyPair.generate()
    identity = IdentityKey.generate()
    signature = identity.sign(b"payload", label=LABEL_CONSISTENCY)
    key, label = os.urandom(32), LABEL_PAIRWISE_MASK
    ad = envelope_ad(session_id=SESSION, stage="share-keys", sender="a", receiver="b")
    sealed = seal(key, bytes(220), associated_data=ad)
    shares, commitment = shamir.split(os.urandom(32), threshold=t, n_shares=h)
    return {
        "agree": wall_per_call(lambda: agree(mine, other.public, label=label, context=SESSION)),
        "seal": wall_per_call(lambda: seal(key, bytes(220), associated_data=ad)),
        "open": wall_per_call(lambda: open_sealed(key, sealed, associated_data=ad)),
        "verify": wall_per_call(
            lambda: verify(identity.public, b"payload", signature, label=LABEL_CONSISTENCY)
        ),
        "sign": wall_per_call(lambda: identity.sign(b"payload", label=LABEL_CONSISTENCY)),
        "shamir_split": wall_best(lambda: shamir.split(os.urandom(32), threshold=t, n_shares=h)),
        "shamir_combine": wall_best(
            lambda: shamir.combine(shares[:used], threshold=t, commitment=commitment)
        ),
        "share_ok": wall_per_call(
            lambda: shamir.share_ok(shares[0], commitment=commitment, n_shares=h)
        ),
    }


def client_protocol_seconds(units: dict[str, float], *, k: int, q: int) -> float:
    """Computed: a client's m-independent work besides masking.

    Per neighbour: advertisement signature check, two low-order probes and the
    share-encryption agreement (on sealing and on opening), one seal, one open;
    per round: two Shamir splits (h shares), q consistency-signature checks, two
    signatures (advertisement, consistency).
    """
    per_neighbour = units["verify"] + 4 * units["agree"] + units["seal"] + units["open"]
    return k * per_neighbour + 2 * units["shamir_split"] + q * units["verify"] + 2 * units["sign"]


def _running_sum_seconds(survivors: int, m: int, bits: int) -> float:
    """The server's per-input work, measured: range check and add into the running sum."""
    total, y = RunningSum(m, bits), encoded_input(1, m, bits)
    limit = np.uint64((1 << bits) - 1)
    start = time.perf_counter()
    for _ in range(survivors):
        if bits < 64 and bool(np.any(y > limit)):
            raise AssertionError("input out of range")
        total.add(y)
    return time.perf_counter() - start


def server_traced_peak_bytes(m: int, bits: int, adds: int = 20, terms: int = 20) -> int:
    """tracemalloc peak while a server adds ``adds`` inputs and removes ``terms`` masks."""
    y = encoded_input(1, m, bits)
    tracemalloc.start()
    total = RunningSum(m, bits)
    for _ in range(adds):
        total.add(y)
    total.add_masks(
        [pairwise_mask_term(os.urandom(32), session=SESSION, sign=1) for _ in range(terms)]
    )
    total.value()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _dropped_and_pairs(n: int, dropout: float, config: SecAggConfig) -> tuple[set[str], int]:
    sites = site_names(n)
    dropped = dropped_sites(sites, dropout)
    graph = neighbour_graph(sites, k=config.k, graph_seed=config.graph_seed, round_index=0)
    return dropped, sum(len(graph[d] - dropped) for d in dropped)


def measure_components(n: int, m: int, dropout: float, bits: int) -> Json:
    """Per-component costs for large n (see module docstring)."""
    config = config_for(n, dropout, bits)
    k, t, q = config.k, config.t, config.quorum
    dropped, pairs = _dropped_and_pairs(n, dropout, config)
    survivors = n - len(dropped)
    units = unit_costs(t, k + 1, max(t, round((k + 1) * survivors / n)))
    masking = client_masking_seconds(k, m, bits)
    prg, prg_scaled = prg_seconds(
        survivors + pairs, m, bits, sample=PRG_SAMPLE, clock=time.perf_counter
    )
    recovered = len([d for d in dropped if pairs])  # dropped sites whose mask key is rebuilt
    parts = {
        "running_sum (measured)": _running_sum_seconds(survivors, m, bits),
        f"prg {survivors + pairs} terms ({'scaled' if prg_scaled else 'measured'})": prg,
        "shamir combine + share checks (computed)": (survivors + recovered)
        * units["shamir_combine"]
        + survivors * (k + 1) * units["share_ok"],
        "signature checks (computed)": (n + survivors) * units["verify"],
        "agreements (computed)": (2 * n + pairs) * units["agree"],
    }
    return {
        "method": "components",
        "client_s": masking + client_protocol_seconds(units, k=k, q=q),
        "client_masking_s": masking,
        "server_s": sum(parts.values()),
        "server_parts_s": parts,
        "survivors": survivors,
        "pairs": pairs,
        "plain_sum_s": plain_sum_seconds(survivors, m),
        "server_traced_peak_bytes": server_traced_peak_bytes(m, bits),
        "units_s": units,
        "config": {"k": k, "t": t, "quorum": q},
    }


def measure(n: int, m: int, dropout: float, bits: int, method: str) -> Json:
    """One cell; adds the identifying fields and the process's peak RSS."""
    run = measure_round if method == "round" else measure_components
    result = run(n, m, dropout, bits)
    if method == "round":
        result["server_traced_peak_bytes"] = server_traced_peak_bytes(m, bits)
    _, pairs = _dropped_and_pairs(n, dropout, config_for(n, dropout, bits))
    result.update(n=n, m=m, dropout=dropout, bits=bits, pairs=pairs)
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--m", type=int, required=True)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--method", choices=["round", "components", "masking"], required=True)
    parser.add_argument("--k", type=int, default=100, help="neighbours (method masking only)")
    args = parser.parse_args(argv)
    if args.method == "masking":
        seconds = client_masking_seconds(args.k, args.m, args.bits)
        result = {"k": args.k, "m": args.m, "bits": args.bits, "client_masking_s": seconds}
    else:
        result = measure(args.n, args.m, args.dropout, args.bits, args.method)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
