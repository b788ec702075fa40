"""One cell of the SecAgg server benchmark; prints one JSON object (run by bench_secagg_server.py).

Importable against any source tree of fedmap-secure (the driver runs it with
``PYTHONPATH=<tree>``), so the same cell can be timed on the code of ``main`` and on
this branch in one invocation. Only APIs both have are used; where the server's code
changed (Shamir reconstruction, holder lookups), the cell calls what the tree's
``ServerSession`` calls.

Parameters: n sites, vector length m, the threat model (``dropout_fraction`` delta,
``corrupt_fraction`` gamma, ring bits) from which (k, t) are derived exactly as a
deployment derives them, and the fraction of sites that actually drop (after sharing
keys, the server's expensive recovery path: their mask keys are rebuilt and every
pairwise mask they shared with a survivor removed).

Times are CPU seconds of this process (``time.process_time``, all threads): the machine is
shared, and wall-clock time mostly measures the other jobs. ``round`` also reports wall
seconds; with ``--workers N`` the server's unmask PRG work runs on a thread pool of N
(only trees whose ``ServerSession`` takes ``workers``), which shows in wall, not CPU, time.
The round itself is ``secagg_round.run_round``, shared with ``secagg_cells.py``.

Methods:

- ``round`` (measured): a real round among n in-process ``ClientSession``s and one
  ``ServerSession``, all five stages; ``server_s`` is the time inside the server's calls.
- ``components`` (for n = 1000, where n real clients do not fit the shared machine):
  each part of the server's work measured on the tree's own code, in full where it is
  cheap and on a stated sample scaled to the real count otherwise:
  running sum of the survivors' masked inputs; PRG removal of every self mask and every
  (survivor, dropped neighbour) pairwise mask, counted on the real neighbour graph;
  Shamir reconstruction of every needed secret from shares at the real holder indices
  (sampled secrets, real splits); share commitment checks, X25519 agreements, signature
  checks and holder lookups per unit, times their counts. Every part says how it was
  obtained.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from secagg_round import (
    SESSION,
    TimedPool,
    best,
    dropped_sites,
    encoded_input,
    layout,
    per_call,
    prg_seconds,
    run_round,
    run_server_round,
    site_names,
)

from fedmap_secure.crypto import shamir
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree
from fedmap_secure.crypto.labels import LABEL_CONSISTENCY, LABEL_PAIRWISE_MASK
from fedmap_secure.crypto.signing import IdentityKey, verify
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.secagg.graph import neighbour_graph
from fedmap_secure.secagg.masking import RunningSum
from fedmap_secure.secagg.server import ServerSession

Json = dict[str, Any]


def config_for(n: int, delta: float, gamma: float, bits: int) -> SecAggConfig:
    return SecAggConfig.for_threat_model(
        n=n, dropout_fraction=delta, corrupt_fraction=gamma, bits=bits
    )


def measure_round(n: int, m: int, drop: float, config: SecAggConfig, workers: Any = None) -> Json:
    result = run_round(n, m, drop, config, workers=workers)
    del result["client_wall_s"], result["masking_wall_s"]
    return {"method": "round", **result}


def measure_sessions(n: int, m: int, drop: float, config: SecAggConfig) -> Json:
    """Memory of one round's n client sessions and the server session, as built in-process."""
    import tracemalloc

    sites = site_names(n)
    keys = {s: IdentityKey.generate() for s in sites}
    roster = Roster.from_mapping({s: k.public for s, k in keys.items()})
    common: Json = {"roster": roster, "config": config, "layout": layout(m), "round_index": 0}
    tracemalloc.start()
    start = time.process_time()
    server = ServerSession(**common, context=b"model")
    clients = [
        ClientSession(site_id=s, identity=keys[s], **common, context=b"model") for s in sites
    ]
    seconds = time.process_time() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del clients, server
    return {
        "method": "sessions",
        "server_s": seconds,
        "server_parts_s": {"build n client sessions and the server (CPU s)": seconds},
        "sessions_traced_peak_mb": peak / 2**20,
    }


def _shamir_seconds(
    config: SecAggConfig, graph: Any, sites: list[str], dropped: set[str], sample: int
) -> tuple[float, int]:
    """Seconds per rebuilt secret, as the tree's server rebuilds it (measured on a sample).

    Owners are sampled among the sites; each owner's holders are its graph neighbourhood
    (sorted, all advertised), the answering holders are the survivors among them, and
    the secret is split for real with (t, h). ``combine_checked`` present: the batched call
    on the t valid shares with the smallest indices (this branch's server: the shares were
    checked against their commitments on arrival, counted under share checks); otherwise
    ``combine`` per secret on every valid share (main's server, which checks them again).
    """
    t = config.t
    batch = []
    for owner in sites[:: max(1, len(sites) // sample)][:sample]:
        holders = sorted({owner} | set(graph[owner]))
        shares, commitment = shamir.split(os.urandom(32), threshold=t, n_shares=len(holders))
        good = [sh for sh, h in zip(shares, holders, strict=True) if h not in dropped]
        batch.append((good, commitment))
    if hasattr(shamir, "combine_checked"):  # shares were checked on arrival (share checks)
        checked = [good[:t] for good, _ in batch]
        seconds = best(lambda: shamir.combine_checked(checked, threshold=t), repeat=1)
    else:
        seconds = best(
            lambda: [shamir.combine(g, threshold=t, commitment=c) for g, c in batch], repeat=1
        )
    return seconds / len(batch), len(batch)


def _holder_lookup_seconds(graph: Any, sites: list[str], cached: bool) -> float:
    """One holder-index lookup per revealed share, as each tree's server does it."""
    ads = {s: None for s in sites}
    owner, peer = sites[0], sorted(graph[sites[0]])[0]
    if cached:
        table = {s: i + 1 for i, s in enumerate(sorted(({owner} | graph[owner]) & ads.keys()))}
        return per_call(lambda: table.get(peer), reps=2000)
    return per_call(lambda: sorted(({owner} | graph[owner]) & set(ads)).index(peer) + 1)


def measure_components(
    n: int, m: int, drop: float, config: SecAggConfig, workers: Any = None
) -> Json:
    k, t, bits = config.k, config.t, config.bits
    sites = site_names(n)
    dropped = dropped_sites(sites, drop)
    graph = neighbour_graph(sites, k=k, graph_seed=config.graph_seed, round_index=0)
    survivors = n - len(dropped)
    pairs = sum(len(set(graph[d]) - dropped) for d in dropped)
    recovered = sum(1 for d in dropped if set(graph[d]) - dropped)
    secrets = survivors + recovered
    revealed = sum(len(({s} | set(graph[s])) - dropped) for s in sites)  # shares the U5 reveal
    parts: dict[str, float] = {}
    y = encoded_input(1, m, bits)
    limit = np.uint64((1 << bits) - 1) if bits < 64 else None
    running = RunningSum(m, bits)
    adds = min(survivors, max(20, 2 * 10**7 // m))

    def add_inputs() -> None:
        for _ in range(adds):
            if limit is not None and bool(np.any(y > limit)):
                raise AssertionError("out of range")
            running.add(y)

    scaled = adds < survivors
    parts[f"running sum ({'scaled' if scaled else 'measured'})"] = (
        best(add_inputs, repeat=1) * survivors / adds
    )
    sample = 2000 if m <= 10**4 else 60
    prg, prg_scaled = prg_seconds(survivors + pairs, m, bits, sample=sample, workers=workers)
    prg_wall, _ = prg_seconds(
        survivors + pairs, m, bits, sample=sample, workers=workers, clock=time.perf_counter
    )
    parts[f"prg {survivors + pairs} terms ({'scaled' if prg_scaled else 'measured'})"] = prg
    per_secret, sampled = _shamir_seconds(config, graph, sites, dropped, sample=24)
    parts[f"shamir {secrets} secrets (scaled from {sampled})"] = per_secret * secrets
    shares, commitment = shamir.split(os.urandom(32), threshold=min(t, 8), n_shares=k + 1)
    share_ok = per_call(lambda: shamir.share_ok(shares[0], commitment=commitment, n_shares=k + 1))
    parts[f"share checks {revealed} (computed)"] = revealed * share_ok
    cached = hasattr(shamir, "combine_checked")  # the holder cache came with the batched server
    parts[f"holder lookups {revealed} (computed)"] = revealed * _holder_lookup_seconds(
        graph, sites, cached
    )
    mine, other = AgreementKeyPair.generate(), AgreementKeyPair.generate()
    unit_agree = per_call(
        lambda: agree(mine, other.public, label=LABEL_PAIRWISE_MASK, context=SESSION)
    )
    parts[f"agreements {2 * n + pairs} (computed)"] = (2 * n + pairs) * unit_agree
    identity = IdentityKey.generate()
    signature = identity.sign(b"payload", label=LABEL_CONSISTENCY)
    unit_verify = per_call(
        lambda: verify(identity.public, b"payload", signature, label=LABEL_CONSISTENCY)
    )
    parts[f"signature checks {n + survivors} (computed)"] = (n + survivors) * unit_verify
    return {
        "method": "components",
        "server_s": sum(parts.values()),
        "server_parts_s": parts,
        "pairs": pairs,
        "secrets": secrets,
        "prg_wall_s": prg_wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--m", type=int, required=True)
    parser.add_argument("--delta", type=float, required=True, help="declared dropout_fraction")
    parser.add_argument("--gamma", type=float, required=True, help="declared corrupt_fraction")
    parser.add_argument("--bits", type=int, required=True)
    parser.add_argument("--drop", type=float, default=0.1, help="sites that actually drop")
    parser.add_argument(
        "--method", choices=["round", "server", "components", "sessions"], required=True
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="threads for the server's PRG work (0: serial)"
    )
    args = parser.parse_args(argv)
    config = config_for(args.n, args.delta, args.gamma, args.bits)
    with ThreadPoolExecutor(max(args.workers, 1)) as pool:
        workers, timed = None, TimedPool(pool)
        if args.workers:
            from fedmap_secure.crypto.prg import Workers  # only trees that have it

            workers = Workers(executor=timed, count=args.workers)
        if args.method == "sessions":
            result = measure_sessions(args.n, args.m, args.drop, config)
        elif args.method == "round":
            result = measure_round(args.n, args.m, args.drop, config, workers)
        elif args.method == "server":
            served = run_server_round(args.n, args.m, args.drop, config, workers=workers)
            result = {"method": "server", **served}
        else:
            result = measure_components(args.n, args.m, args.drop, config, workers)
    if "server_main_thread_s" in result:  # CPU time on the critical path (see TimedPool)
        result["server_critical_s"] = result["server_main_thread_s"] + timed.critical_s
    result.update(
        workers=args.workers,
        n=args.n,
        m=args.m,
        delta=args.delta,
        gamma=args.gamma,
        bits=args.bits,
        drop=args.drop,
        k=config.k,
        t=config.t,
        quorum=config.quorum,
        maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
