"""The server side of FedMAP over gRPC: announce, securely aggregate, update, persist.

Per round r (from the stored state, or round 0): the strategy's layout and the
round context are fixed, every joining site receives ``FedMapRound`` (gamma,
psi, configuration, SecAgg setup), ``AggregationServer.run_round`` returns the
decoded sums of the sites that completed, and the strategy's server update
computes the next state from those sums only. The new state is written to the
SQLite store before round r + 1 opens; an aborted round raises and writes
nothing (restart resumes at the same round with the same state). After the
last round the final state is published to every site that joins.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.simulation import initial_state, round_context
from fedmap_secure.fedmap.methods import (
    GlobalState,
    ServerLog,
    contribution_layout,
    make_strategy,
)
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.fedmap_wire import announcement, config_json
from fedmap_secure.transport.server import AggregationServer
from fedmap_secure.transport.state_store import ServerStateStore

log = logging.getLogger(__name__)
RoundDone = Callable[[GlobalState, ServerLog], None]


def serve_fedmap(
    *,
    server: AggregationServer,
    config: SimulationConfig,
    n_features: int,
    n_classes: int,
    store: ServerStateStore,
    final_timeout: float,
    on_round: RoundDone | None = None,
    layout_check: Callable[[VectorLayout], None] | None = None,
) -> GlobalState:
    """Run the remaining training rounds, then publish the final state; returns it.

    ``layout_check`` (e.g. ``ClientLevelRounds.check_layout``) vets the
    contribution layout once, before the first round opens.
    """
    strategy = make_strategy(config)
    if not strategy.aggregates:
        raise ConfigError(f"method {config.method.value!r} aggregates nothing; use simulate")
    state, prior = initial_state(config, n_features=n_features, n_classes=n_classes)
    stored = store.latest()
    if stored is not None:
        state = GlobalState(round_index=stored.next_round, gamma=stored.gamma, psi=stored.psi)
        log.info("resuming at round %d from %s", state.round_index, store.path)
    text = config_json(config)
    mask = prior.psi_nonneg_mask() if prior is not None else None
    checked = layout_check is None
    while state.round_index < config.rounds:
        current = state
        layout = contribution_layout(strategy, current, prior)
        if layout is None:
            raise ConfigError(f"method {config.method.value!r} has no contribution layout")
        if not checked and layout_check is not None:
            layout_check(layout)
            checked = True

        def announce(setup: tm.SecAggSetup, current: GlobalState = current) -> tm.RoundOpening:
            return announcement(config_text=text, state=current, setup=setup)

        result = server.run_round(
            round_index=current.round_index,
            layout=layout,
            context=round_context(config, current),
            announce=announce,
        )
        state, round_log = strategy.server_update(current, result, mask)
        store.save(
            next_round=state.round_index,
            gamma=state.gamma,
            psi=state.psi,
            metrics=dataclasses.asdict(round_log),
        )
        if on_round is not None:
            on_round(state, round_log)
    reached = server.publish(
        announcement(config_text=text, state=state, setup=None), timeout=final_timeout
    )
    log.info("final state published to %d sites", len(reached))
    return state
