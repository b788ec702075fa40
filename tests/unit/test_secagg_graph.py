from __future__ import annotations

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.graph import neighbour_graph

SITES = [f"site{i:02d}" for i in range(40)]


def test_complete_graph_connects_everyone() -> None:
    graph = neighbour_graph(SITES[:5], k=4, graph_seed=bytes(32), round_index=0)
    for site, neighbours in graph.items():
        assert neighbours == frozenset(SITES[:5]) - {site}


@pytest.mark.parametrize("k", [2, 4, 10, 20])
def test_harary_graph_is_k_regular_symmetric_and_loop_free(k: int) -> None:
    graph = neighbour_graph(SITES, k=k, graph_seed=b"\x05" * 32, round_index=3)
    for site, neighbours in graph.items():
        assert len(neighbours) == k
        assert site not in neighbours
        for other in neighbours:
            assert site in graph[other]


def test_graph_is_deterministic_and_changes_with_seed_and_round() -> None:
    a = neighbour_graph(SITES, k=6, graph_seed=b"\x05" * 32, round_index=3)
    assert a == neighbour_graph(list(reversed(SITES)), k=6, graph_seed=b"\x05" * 32, round_index=3)
    assert a != neighbour_graph(SITES, k=6, graph_seed=b"\x05" * 32, round_index=4)
    assert a != neighbour_graph(SITES, k=6, graph_seed=b"\x06" * 32, round_index=3)


def test_graph_rejects_bad_k_and_duplicates() -> None:
    with pytest.raises(ConfigError):
        neighbour_graph(SITES, k=5, graph_seed=bytes(32), round_index=0)
    with pytest.raises(ConfigError, match="duplicate"):
        neighbour_graph(["a", "a", "b"], k=2, graph_seed=bytes(32), round_index=0)


def test_one_graph_object_per_round_with_o_n_memory() -> None:
    """n sessions of one round share one graph; it holds the ordering, not an n x k adjacency."""
    import tracemalloc

    sites = [f"s{i:04d}" for i in range(1000)]
    tracemalloc.start()
    graph = neighbour_graph(sites, k=624, graph_seed=b"\x07" * 32, round_index=9)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000  # an n x k frozenset adjacency would take ~30 MB
    assert (
        neighbour_graph(list(reversed(sites)), k=624, graph_seed=b"\x07" * 32, round_index=9)
        is graph
    )
    assert graph is not neighbour_graph(sites, k=624, graph_seed=b"\x07" * 32, round_index=10)
    first = graph[sites[0]]
    assert len(first) == 624
    assert all(sites[0] in graph[v] for v in list(first)[:20])
