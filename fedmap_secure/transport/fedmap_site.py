"""The site side of FedMAP over gRPC: train on each announced state and contribute securely.

A site process loops over rounds: ``SiteClient.run_round`` hands it the
announcement (after checking the announced context against the one it
recomputes), the site loads gamma/psi, trains locally, and returns its clipped
contribution vector, which the SecAgg+ session masks before it leaves. A site
that cannot contribute declines: ``BudgetExceededError`` from its trainer or
score release (privacy budget exhausted) declines with BUDGET_EXHAUSTED, a site
of another tier with NO_DATA. On the final announcement fine-tune-tier sites
train under the final state and every site evaluates; the loop ends.

Joins that fail (server unreachable, e.g. restarting) are retried for
``patience`` seconds. After a completed round the site asks for the next round;
after an aborted or failed one, for the same index again (a restarted server
re-runs the round it had not completed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import BudgetExceededError, RemoteProtocolError
from fedmap_secure.experiments.simulation import (
    RoundGate,
    ScoreReleaseFactory,
    SiteResult,
    TrainerFactory,
    build_sites,
)
from fedmap_secure.fedmap.methods import (
    GlobalState,
    MethodStrategy,
    contribution_layout,
    make_strategy,
)
from fedmap_secure.fedmap.site import Phase, Site, SiteReport
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.training.interface import LocalTrainingResult
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.fedmap_wire import config_from_json, context_of, state_of
from fedmap_secure.transport.site import SiteClient, SiteOutcome
from fedmap_secure.transport.site import SiteReport as WireReport

log = logging.getLogger(__name__)


@dataclass
class FedMapSiteRun:
    """What one site did over the whole run (kept at the site)."""

    rounds: list[WireReport] = field(default_factory=list)
    reports: list[SiteReport] = field(default_factory=list)
    result: SiteResult | None = None
    final_state: GlobalState | None = None


class _SiteRunner:
    """Builds the site on the first announcement and answers each round."""

    def __init__(
        self,
        *,
        data: SiteData,
        feature_names: tuple[str, ...],
        n_classes: int,
        trainer_factory: TrainerFactory,
        score_release_factory: ScoreReleaseFactory | None,
        round_gate: RoundGate | None = None,
    ) -> None:
        self.data = data
        self.round_gate = round_gate
        self.dataset = FederatedDataset(
            name="site", feature_names=feature_names, n_classes=n_classes, sites=(data,)
        )
        self.trainer_factory = trainer_factory
        self.score_release_factory = score_release_factory
        self.site: Site | None = None
        self.config: SimulationConfig | None = None
        self.run = FedMapSiteRun()

    def _prepare(self, opening: tm.FedMapRound) -> tuple[Site, MethodStrategy, GlobalState]:
        config = config_from_json(opening.config_json)
        if self.config is not None and config != self.config:
            raise RemoteProtocolError(SERVER_ID, "the run configuration changed between rounds")
        self.config = config
        strategy = make_strategy(config)
        state = state_of(opening)
        if self.site is None:
            (self.site,) = build_sites(
                config,
                self.dataset,
                self.trainer_factory,
                state,
                strategy.uses_icnn,
                self.score_release_factory,
            )
        self.site.receive(state)
        return self.site, strategy, state

    def contribute(self, opening: tm.RoundOpening) -> FloatVector | tm.DeclineReason | None:
        if not isinstance(opening, tm.FedMapRound):
            raise RemoteProtocolError(SERVER_ID, "expected a FedMAP round announcement")
        site, strategy, state = self._prepare(opening)
        if opening.final:
            self._finish(site, strategy, state)
            return None
        if self.data.tier is not Tier.TRAIN:
            return tm.DeclineReason.NO_DATA
        layout = contribution_layout(strategy, state, site.prior)
        setup = opening.setup
        if layout is None or setup is None or layout != setup.layout:
            raise RemoteProtocolError(SERVER_ID, "announced layout differs from the method's")
        if self.round_gate is not None and not self.round_gate(site.name, state.round_index):
            return tm.DeclineReason.BUDGET_EXHAUSTED  # the gate logged why; nothing was charged
        try:
            training = site.train(strategy, start_from_gamma=strategy.resets_to_gamma)
            vector, clipped = site.contribute(strategy, layout)
        except BudgetExceededError as exc:
            log.warning("site %s declines round %d: %s", site.name, state.round_index, exc)
            return tm.DeclineReason.BUDGET_EXHAUSTED
        self._record(site, state.round_index, Phase.TRAIN, training, clipped)
        return vector

    def _record(
        self,
        site: Site,
        round_index: int,
        phase: Phase,
        training: LocalTrainingResult | None,
        clipped: int,
    ) -> None:
        score = site.last_score
        self.run.reports.append(
            SiteReport(
                site=site.name,
                tier=site.data.tier,
                round_index=round_index,
                phase=phase,
                training=training,
                omega=score[0] if score else None,
                prior_value=score[1] if score else None,
                clipped_coordinates=clipped,
                personalised=None,
                global_=None,
            )
        )

    def _finish(self, site: Site, strategy: MethodStrategy, state: GlobalState) -> None:
        rounds = self.config.finetune_rounds if self.config is not None else 0
        if self.data.tier is Tier.FINETUNE:
            for i in range(rounds):
                first = strategy.resets_to_gamma and i == 0
                training = site.train(strategy, start_from_gamma=first)
                if strategy.uses_icnn:
                    site.score()
                self._record(site, state.round_index + i, Phase.FINETUNE, training, 0)
        self.run.final_state = state
        self.run.result = SiteResult(
            site=site.name,
            tier=site.data.tier,
            n_train=site.n_train,
            n_test=site.data.n_test,
            personalised=site.evaluate_personalised(),
            global_=site.evaluate_global(),
        )


def run_fedmap_site(
    *,
    client: SiteClient,
    data: SiteData,
    feature_names: tuple[str, ...],
    n_classes: int,
    trainer_factory: TrainerFactory,
    score_release_factory: ScoreReleaseFactory | None = None,
    round_gate: RoundGate | None = None,
    min_round: int = 0,
    patience: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> FedMapSiteRun:
    """Take part in every round from ``min_round`` until the final announcement.

    ``round_gate(site, round)`` runs before any training in a round (a private
    site's durable budget charge); False declines the round with BUDGET_EXHAUSTED.
    """
    runner = _SiteRunner(
        data=data,
        feature_names=feature_names,
        n_classes=n_classes,
        trainer_factory=trainer_factory,
        score_release_factory=score_release_factory,
        round_gate=round_gate,
    )
    next_round, waited = min_round, 0.0
    while True:
        report = client.run_round(runner.contribute, min_round=next_round, context_of=context_of)
        runner.run.rounds.append(report)
        if report.outcome is SiteOutcome.FINAL:
            return runner.run
        if report.round_index is None:  # could not join: server unreachable or refusing
            if waited >= patience:
                raise RemoteProtocolError(SERVER_ID, f"cannot join a round: {report.detail}")
            sleep(1.0)
            waited += 1.0
            continue
        waited = 0.0
        done = report.outcome in (SiteOutcome.COMPLETED, SiteOutcome.DECLINED)
        next_round = report.round_index + 1 if done else report.round_index
        if not done:
            log.info("site %s: round %d %s", data.name, report.round_index, report.outcome.value)


def finish_offline(
    *,
    data: SiteData,
    feature_names: tuple[str, ...],
    n_classes: int,
    final: tm.FedMapRound,
    trainer_factory: TrainerFactory,
    score_release_factory: ScoreReleaseFactory | None = None,
) -> FedMapSiteRun:
    """A site that took no part in training, given the final announcement directly.

    Fine-tune-tier sites train under the final state; every site evaluates.
    """
    runner = _SiteRunner(
        data=data,
        feature_names=feature_names,
        n_classes=n_classes,
        trainer_factory=trainer_factory,
        score_release_factory=score_release_factory,
    )
    runner.contribute(final)
    return runner.run
