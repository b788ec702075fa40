"""The public neighbour graph that decides which sites mask with each other.

Classic SecAgg (Bonawitz et al. 2017) uses the complete graph. SecAgg+ (Bell et
al. 2020, section 3) uses a random k-regular graph: a Harary graph H_{k,n} on a
uniformly random ordering of the sites, so each site masks with, and shares its
secrets among, only ``k`` neighbours, cutting client and server cost from O(n)
to O(k) per site.

Construction (deterministic, so every party computes the same graph):

    position(s) = digest(graph_seed, uint64(round), utf8(s), label=LABEL_NEIGHBOUR_GRAPH)
    order       = sites sorted by position (a random permutation if SHA-256 is a random oracle)
    N(order[i]) = { order[(i + j) mod n] : 1 <= |j| <= k / 2 }

Under a uniform ordering the neighbours of a site are a uniform k-subset of the
other sites, which is what the hypergeometric bounds in ``config`` assume.
Threat: the ordering depends only on public consortium data (graph_seed,
round), not on anything the server picks during the round, so the server
cannot place a target among corrupt neighbours; corruption is assumed static.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedmap_secure.crypto.hashing import digest, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_NEIGHBOUR_GRAPH
from fedmap_secure.errors import ConfigError


def neighbour_graph(
    sites: Sequence[str], *, k: int, graph_seed: bytes, round_index: int
) -> Mapping[str, frozenset[str]]:
    """Map each site to its ``k`` neighbours (never itself); symmetric by construction."""
    n = len(sites)
    if len(set(sites)) != n:
        raise ConfigError("neighbour graph: duplicate site ids")
    if k == n - 1:
        everyone = frozenset(sites)
        return {s: everyone - {s} for s in sites}
    if not (2 <= k < n - 1 and k % 2 == 0):
        raise ConfigError(f"neighbour graph: k must be n-1 or even in [2, n-2], got {k}")
    order = sorted(
        sites,
        key=lambda s: digest(
            graph_seed, encode_uint(round_index), encode_str(s), label=LABEL_NEIGHBOUR_GRAPH
        ),
    )
    half = k // 2
    graph: dict[str, frozenset[str]] = {}
    for i, site in enumerate(order):
        graph[site] = frozenset(order[(i + j) % n] for j in range(-half, half + 1) if j != 0)
    return graph
