"""What both roles derive identically before a round starts (SPEC §3).

Site and server sessions check the roster and round number the same way and
compute the same setup id from (round, config, roster, layout, context) and the
same neighbour graph; one function keeps the two derivations from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.config import RingSpec, Roster, SecAggConfig, layout_digest
from fedmap_secure.secagg.graph import NeighbourGraph, neighbour_graph
from fedmap_secure.secagg.quantize import encoded_length


@dataclass(frozen=True, kw_only=True)
class RoundSetup:
    """Encoded vector length, context digest, setup id and neighbour graph of one round."""

    length: int
    context_hash: bytes
    setup: bytes
    graph: NeighbourGraph
    """Shared by every session of the round (``neighbour_graph`` returns one object)."""


def round_setup(
    *,
    roster: Roster,
    config: SecAggConfig,
    layout: VectorLayout,
    round_index: int,
    context: bytes,
    ring: RingSpec | None = None,
) -> RoundSetup:
    """Validate the round's public inputs and derive its setup id (``ConfigError`` if invalid)."""
    if len(roster.sites) != config.n:
        raise ConfigError(f"roster has {len(roster.sites)} sites but config.n = {config.n}")
    if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
        raise ConfigError(f"round_index must be an int >= 0, got {round_index!r}")
    context_hash = encoding.context_digest(context)
    setup = encoding.setup_id(
        round_index=round_index,
        config_digest=config.digest(),
        roster_digest=roster.digest(),
        layout_digest=layout_digest(layout, ring),
        context_hash=context_hash,
    )
    length = encoded_length(layout) if ring is None else ring.length
    graph = neighbour_graph(
        roster.sites, k=config.k, graph_seed=config.graph_seed, round_index=round_index
    )
    return RoundSetup(length=length, context_hash=context_hash, setup=setup, graph=graph)
