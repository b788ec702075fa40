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

Memory: a ``NeighbourGraph`` keeps only the ordering (O(n)) and computes a
site's k neighbours when asked (O(k)); ``neighbour_graph`` returns one shared
instance per (sites, k, graph_seed, round), so the n sessions of an in-process
round share one graph instead of holding n copies of an n x k adjacency.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache

from fedmap_secure.crypto.hashing import digest, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_NEIGHBOUR_GRAPH
from fedmap_secure.errors import ConfigError


class NeighbourGraph(Mapping[str, frozenset[str]]):
    """Site -> its ``k`` neighbours, computed on demand from the public ordering.

    Immutable; ``graph[site]`` costs O(k) (O(n) for the complete graph) and
    the object holds O(n) state whatever k is.
    """

    __slots__ = ("_half", "_k", "_order", "_position")

    def __init__(self, order: Sequence[str], *, k: int) -> None:
        self._order = tuple(order)
        self._position = {site: i for i, site in enumerate(self._order)}
        self._k = k
        self._half = k // 2

    @property
    def k(self) -> int:
        return self._k

    @property
    def order(self) -> tuple[str, ...]:
        """The sites in graph order (positions on the Harary ring)."""
        return self._order

    def __getitem__(self, site: str) -> frozenset[str]:
        i = self._position[site]
        n = len(self._order)
        if self._k == n - 1:
            return frozenset(self._order[:i] + self._order[i + 1 :])
        return frozenset(
            self._order[(i + j) % n] for j in range(-self._half, self._half + 1) if j != 0
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, site: object) -> bool:
        return site in self._position

    def __repr__(self) -> str:
        return f"NeighbourGraph(n={len(self._order)}, k={self._k})"


def neighbour_graph(
    sites: Sequence[str], *, k: int, graph_seed: bytes, round_index: int
) -> NeighbourGraph:
    """Map each site to its ``k`` neighbours (never itself); symmetric by construction.

    Equal arguments give the same (immutable) object: one graph per round.
    """
    return _graph(tuple(sorted(sites)), len(sites), k, bytes(graph_seed), round_index)


@lru_cache(maxsize=16)
def _graph(
    sites: tuple[str, ...], listed: int, k: int, graph_seed: bytes, round_index: int
) -> NeighbourGraph:
    n = len(sites)
    if len(set(sites)) != listed:
        raise ConfigError("neighbour graph: duplicate site ids")
    if k == n - 1:
        return NeighbourGraph(sites, k=k)
    if not (2 <= k < n - 1 and k % 2 == 0):
        raise ConfigError(f"neighbour graph: k must be n-1 or even in [2, n-2], got {k}")
    order = sorted(
        sites,
        key=lambda s: digest(
            graph_seed, encode_uint(round_index), encode_str(s), label=LABEL_NEIGHBOUR_GRAPH
        ),
    )
    return NeighbourGraph(order, k=k)
