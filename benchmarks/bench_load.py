"""Load and availability figures of the hardened gRPC server (issue 15).

1. ``load``: N sites (default 100) over loopback gRPC complete one secure round
   of an L-value vector (default 10,000): the server (caps, deadlines,
   layout-derived limits on) runs in a fresh process of its own, every site is
   a thread of one child process (``bench_grpc.run_sites``). Prints the round's
   wall time and the server process's peak resident memory (``ru_maxrss``).
2. ``dead``: 4 sites of which one never connects, three rounds with
   ``join_timeout`` J and ``join_grace`` G, side by side with one round of the
   old behaviour (no grace: the first stage waits for the dead site until J).
   Prints seconds per round for both and their ratio.

    PYTHONPATH=. python benchmarks/bench_load.py [--sites 100] [--length 10000] [--tls]
        [--join-timeout 20] [--grace 1.0]

Timings only (2 shared cores on the development machine: expect ±30 %).
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
from bench_grpc import grpc_in_fresh_process  # benchmarks/ is on sys.path when run as a script

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.transport.channels import open_channel
from fedmap_secure.transport.security import Insecure
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.site import SiteClient

SITES = ("site-a", "site-b", "site-c", "site-d")
LAYOUT = VectorLayout((Field(name="theta", length=100, bound=4.0),))


def _round_with_a_dead_site(
    server: AggregationServer,
    identities: dict[str, IdentityKey],
    roster: Roster,
    config: SecAggConfig,
    round_index: int,
) -> float:
    """One round among site-a, b, c (site-d is dead); returns its wall time."""

    def one(site: str) -> None:
        channel = open_channel(f"127.0.0.1:{server.port}", Insecure())
        client = SiteClient(
            channel=channel,
            site_id=site,
            identity=identities[site],
            roster=roster,
            config=config,
            round_timeout=600,
        )
        client.run_round(lambda _: np.zeros(100), min_round=round_index)
        channel.close()

    threads = [threading.Thread(target=one, args=(s,)) for s in SITES[:3]]
    for t in threads:
        t.start()
    start = time.perf_counter()
    result = server.run_round(round_index=round_index, layout=LAYOUT, context=b"bench")
    elapsed = time.perf_counter() - start
    assert result.contributors == frozenset(SITES[:3])
    for t in threads:
        t.join()
    return elapsed


def dead_site_seconds(join_timeout: float, grace: float, rounds: int) -> float:
    identities = {s: IdentityKey.generate() for s in SITES}
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    config = SecAggConfig.for_threat_model(n=4, dropout_fraction=0.25, corrupt_fraction=0.0)
    settings = ServerSettings(join_timeout=join_timeout, stage_timeout=30, join_grace=grace)
    with AggregationServer(
        roster=roster, config=config, security=Insecure(), settings=settings
    ) as server:
        times = [
            _round_with_a_dead_site(server, identities, roster, config, r) for r in range(rounds)
        ]
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--length", type=int, default=10_000)
    parser.add_argument("--tls", action="store_true", help="mutual TLS (default: plaintext)")
    parser.add_argument("--join-timeout", type=float, default=20.0)
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--skip-dead", action="store_true")
    args = parser.parse_args()
    if not args.skip_load:
        seconds, peak = grpc_in_fresh_process(args.sites, args.length, args.tls)
        mode = "mutual TLS" if args.tls else "plaintext loopback"
        print(
            f"load: {args.sites} sites, {args.length} values, {mode}: one secure round in "
            f"{seconds:.2f} s, server peak RSS {peak:.0f} MiB"
        )
    if not args.skip_dead:
        with_grace = dead_site_seconds(args.join_timeout, args.grace, rounds=3)
        without = dead_site_seconds(args.join_timeout, args.join_timeout, rounds=1)
        print(
            f"dead site (1 of 4), join_timeout {args.join_timeout:g} s: {with_grace:.2f} s per "
            f"round with join_grace {args.grace:g} s (3 rounds), {without:.2f} s without grace "
            f"(1 round); ratio {without / with_grace:.1f}x"
        )


if __name__ == "__main__":
    main()
