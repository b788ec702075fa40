"""What the server does in a run, written once for every transport.

Per round r (from the stored state, or round 0): fix the strategy's layout
and the round context (``round_context(config, state)``), ask the channel to
announce the round and aggregate the sites' answers (``ServerChannel.run_round``
-> ``AggregateResult``), compute the next state from the sums only
(``strategy.server_update``), persist it (``ServerStateStore``, when given)
before round r + 1 opens, and report progress (round i/N, contributors,
dropped sites; a site that drops or rejoins is logged). After the last round
the final state is published (``ServerChannel.publish_final``) and, when the
runtime has a ``model_path`` and the consortium's ``schema``, the final global
model (gamma) is written there with ``fedmap_secure.model_files.save_model``
(site ``"global"``, run id ``announcement.run_id(config)``, epsilon null: the
sites' spends differ). A method that aggregates nothing has no global model.

A round in which nothing was aggregated (every site declined; a secure round
aborted, in process or over gRPC; a decoded sum rejected as implausible)
leaves the model unchanged and is stored as such: the next round has the next
index, also after a restart (a round index is never announced twice).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.fedmap.methods import GlobalState, ServerLog, contribution_layout, make_strategy
from fedmap_secure.runtime.announcement import announcement, config_json, run_id
from fedmap_secure.runtime.channel import RoundPlan, ServerChannel
from fedmap_secure.runtime.results import ProgressFn
from fedmap_secure.runtime.state import initial_state, round_context
from fedmap_secure.transport.state_store import ServerStateStore

log = logging.getLogger(__name__)

LayoutCheck = Callable[[VectorLayout], None]
"""Called once with the contribution layout before round 0 (e.g. the SecAgg encoding check)."""

RoundDone = Callable[[GlobalState, ServerLog], None]


class ServerRuntime:
    """The server's part in a run (see the module docstring)."""

    def __init__(
        self,
        *,
        config: SimulationConfig,
        n_features: int,
        n_classes: int,
        channel: ServerChannel,
        sites: Sequence[str] = (),
        store: ServerStateStore | None = None,
        layout_check: LayoutCheck | None = None,
        progress: ProgressFn | None = None,
        on_round: RoundDone | None = None,
        extra_steps: int = 0,
        model_path: Path | None = None,
        schema: FeatureSchema | None = None,
    ) -> None:
        self.config = config
        self.n_features, self.n_classes = n_features, n_classes
        self.model_path, self.schema = model_path, schema
        self.model_file: Path | None = None
        self.channel = channel
        self.sites = tuple(sites)
        self.store = store
        self.layout_check = layout_check
        self.progress = progress
        self.on_round = on_round
        self.extra_steps = extra_steps
        self.strategy = make_strategy(config)
        self.state, self.prior = initial_state(config, n_features=n_features, n_classes=n_classes)
        self.logs: list[ServerLog] = []
        self._dropped: set[str] = set()

    def run(self) -> GlobalState:
        """Run the remaining rounds, publish the final state; returns it."""
        config, strategy = self.config, self.strategy
        state = self._resume()
        text = config_json(config)
        mask = self.prior.psi_nonneg_mask() if self.prior is not None else None
        checked = self.layout_check is None
        total = config.rounds + self.extra_steps
        while state.round_index < config.rounds:
            current = state
            layout = contribution_layout(strategy, current, self.prior)
            if not checked and layout is not None and self.layout_check is not None:
                self.layout_check(layout)
                checked = True
            plan = RoundPlan(
                config_text=text,
                state=current,
                layout=layout,
                context=round_context(config, current),
            )
            result = self.channel.run_round(plan)
            if result is None:
                state = dataclasses.replace(current, round_index=current.round_index + 1)
                self._log_round(current.round_index, None)
                if self.store is not None:  # the index is used up, also after a restart
                    self.store.save(
                        next_round=state.round_index,
                        gamma=state.gamma,
                        psi=state.psi,
                        metrics={"round_index": current.round_index, "contributors": 0},
                    )
            else:
                state, round_log = strategy.server_update(current, result, mask)
                self.logs.append(round_log)
                self._log_round(current.round_index, result.contributors)
                if self.store is not None:
                    self.store.save(
                        next_round=state.round_index,
                        gamma=state.gamma,
                        psi=state.psi,
                        metrics=dataclasses.asdict(round_log),
                    )
                if self.on_round is not None:
                    self.on_round(state, round_log)
            if self.progress is not None:
                self.progress("training", state.round_index, total)
        self.channel.publish_final(announcement(config_text=text, state=state, setup=None))
        self.state = state
        self._write_model(state)
        return state

    def _write_model(self, state: GlobalState) -> None:
        """The final global model (see the module docstring); nothing without a path."""
        if self.model_path is None or not self.strategy.aggregates:
            return
        if self.schema is None:
            log.warning(
                "no feature schema known: the global model file is not written (%s)",
                self.model_path,
            )
            return
        from fedmap_secure.fedmap.models import build_model, load_flat_vector
        from fedmap_secure.model_files import ModelFileKind, ModelMeta, save_model

        config = self.config
        net = build_model(
            config.model, n_features=self.n_features, n_classes=self.n_classes, seed=0
        )
        load_flat_vector(net.parameters(), state.gamma)
        meta = ModelMeta(
            model=config.model,
            n_features=self.n_features,
            n_classes=self.n_classes,
            schema=self.schema,
            round=max(state.round_index - 1, 0),
            run_id=run_id(config),
            site="global",
            kind=ModelFileKind.GLOBAL,
            class_labels=self.schema.classes,
        )
        self.model_file = save_model(self.model_path, model=net, meta=meta)
        log.info("global model written to %s", self.model_file)

    def _resume(self) -> GlobalState:
        stored = None if self.store is None else self.store.latest()
        if stored is None or self.store is None:
            return self.state
        log.info("resuming at round %d from %s", stored.next_round, self.store.path)
        return GlobalState(round_index=stored.next_round, gamma=stored.gamma, psi=stored.psi)

    def _log_round(self, round_index: int, contributors: frozenset[str] | None) -> None:
        """One line per round; drops and rejoins by name when the expected sites are known."""
        n = self.config.rounds
        if contributors is None:
            log.info("round %d/%d: nothing aggregated; the model is unchanged", round_index + 1, n)
            return
        dropped = sorted(set(self.sites) - contributors)
        for site in sorted(contributors & self._dropped):
            log.info("round %d/%d: site %s rejoined", round_index + 1, n, site)
        for site in dropped:
            if site not in self._dropped:
                log.warning("round %d/%d: site %s dropped", round_index + 1, n, site)
        self._dropped = set(dropped)
        log.info(
            "round %d/%d: %d contributor(s)%s",
            round_index + 1,
            n,
            len(contributors),
            f", dropped: {', '.join(dropped)}" if dropped else "",
        )
