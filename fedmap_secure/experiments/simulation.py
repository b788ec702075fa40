"""The in-process simulation engine: every site and the server in one process.

Rounds: the server broadcasts ``GlobalState``; each training-tier site trains
locally and hands a clipped contribution vector to the ``Aggregator``; the
strategy computes the next state from ``AggregateResult.sums`` only. After the
last round, fine-tune-tier sites train under the final (gamma, psi) and every
site is evaluated. Everything is deterministic given ``config.seed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from fedmap_secure.aggregation import Aggregator, VectorLayout
from fedmap_secure.config.loader import config_to_dict
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import AbortedError, ConfigError
from fedmap_secure.fedmap.contribution import MeanLoglikRelease, exact_clipped_mean
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import (
    GlobalState,
    MethodStrategy,
    ServerLog,
    contribution_layout,
    make_strategy,
)
from fedmap_secure.fedmap.models import build_model, flat_vector, load_flat_vector
from fedmap_secure.fedmap.site import Phase, Site, SiteReport, make_generator, site_seed
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig, LocalTrainingResult

log = logging.getLogger(__name__)

TrainerFactory = Callable[[SiteData, LocalTrainingConfig], LocalTrainer]
"""Makes the local trainer of one site (one per site: a DP trainer keeps a per-site ledger)."""

ScoreReleaseFactory = Callable[[SiteData], MeanLoglikRelease]
"""Makes one site's release of the mean log-likelihood in its score (DP: that site's ledger)."""

ProgressFn = Callable[[str, int, int], None]
"""Called as progress(phase, completed, total) after every round."""

RoundGate = Callable[[str, int], bool]
"""admit(site, round) before a training site touches its data in a round: False = the
site declines (it sends nothing; for secure aggregation it has dropped out). A private
site charges its ledger inside this call, before anything is released."""

LayoutCheck = Callable[[VectorLayout], None]
"""Called once with the contribution layout before round 0 (e.g. the SecAgg encoding check)."""


@runtime_checkable
class PreparesModel(Protocol):
    """A trainer that may need a fixed copy of the model (Opacus-compatible layers)."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...


@dataclass(frozen=True, kw_only=True)
class SiteResult:
    """Final test metrics of one site (None where the model does not exist)."""

    site: str
    tier: Tier
    n_train: int
    n_test: int
    personalised: EvalMetrics | None
    global_: EvalMetrics | None


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    method: str
    dataset: str
    rounds: int
    seed: int
    sites: tuple[SiteResult, ...]
    reports: tuple[SiteReport, ...]
    server_logs: tuple[ServerLog, ...]
    final_state: GlobalState | None
    n_theta: int
    n_psi: int
    wall_seconds: float

    def _accuracies(self, attr: str) -> list[float]:
        values = [getattr(s, attr) for s in self.sites]
        return [m.accuracy for m in values if m is not None]

    @property
    def mean_personalised_accuracy(self) -> float | None:
        acc = self._accuracies("personalised")
        return float(np.mean(acc)) if acc else None

    @property
    def worst_site_personalised_accuracy(self) -> float | None:
        acc = self._accuracies("personalised")
        return min(acc) if acc else None

    @property
    def mean_global_accuracy(self) -> float | None:
        acc = self._accuracies("global_")
        return float(np.mean(acc)) if acc else None


def derived_seed(run_seed: int, label: str) -> int:
    digest = hashlib.sha256(f"fedmap-secure/{label}/{run_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def round_context(config: SimulationConfig, state: GlobalState) -> bytes:
    """sha256 over what all sites must agree on this round: config, round, gamma, psi."""
    h = hashlib.sha256(b"fedmap-secure/round-context/v1\x00")
    h.update(json.dumps(config_to_dict(config), sort_keys=True).encode())
    h.update(state.round_index.to_bytes(8, "big"))
    h.update(np.ascontiguousarray(state.gamma, dtype="<f8").tobytes())
    if state.psi is not None:
        h.update(np.ascontiguousarray(state.psi, dtype="<f8").tobytes())
    return h.digest()


def initial_state(
    config: SimulationConfig, *, n_features: int, n_classes: int
) -> tuple[GlobalState, ConvexPrior | None]:
    """Round 0's gamma (and psi with its prior), seeded from the run seed (engine and server)."""
    model = build_model(
        config.model,
        n_features=n_features,
        n_classes=n_classes,
        seed=derived_seed(config.seed, "model"),
    )
    prior = None
    if make_strategy(config).uses_icnn:
        sizes = [int(p.numel()) for p in model.parameters()]
        prior = ConvexPrior(sizes, config.prior, seed=derived_seed(config.seed, "prior"))
    state = GlobalState(
        round_index=0,
        gamma=flat_vector(model.parameters()),
        psi=prior.psi() if prior is not None else None,
    )
    return state, prior


def build_sites(
    config: SimulationConfig,
    dataset: FederatedDataset,
    trainer_factory: TrainerFactory,
    initial: GlobalState,
    with_prior: bool,
    score_release_factory: ScoreReleaseFactory | None = None,
) -> list[Site]:
    """One ``Site`` per dataset site; every model starts from the initial gamma.

    Only sites with training rows get a trainer (a DP trainer opens a ledger).
    """
    d, c = len(dataset.feature_names), dataset.n_classes
    sites = []
    for data in dataset.sites:
        net = build_model(config.model, n_features=d, n_classes=c, seed=0)
        load_flat_vector(net.parameters(), initial.gamma)
        trainer = trainer_factory(data, config.training) if data.n_train > 0 else None
        if isinstance(trainer, PreparesModel):
            net = trainer.prepare_model(net)
        gamma_net = build_model(config.model, n_features=d, n_classes=c, seed=0)
        prior = (
            ConvexPrior([int(p.numel()) for p in net.parameters()], config.prior, seed=0)
            if with_prior
            else None
        )
        sites.append(
            Site(
                data=data,
                model=net,
                gamma_model=gamma_net,
                prior=prior,
                trainer=trainer,
                generator=make_generator(site_seed(config.seed, data.name)),
                score_config=config.score,
                n_classes=dataset.n_classes,
                score_release=(
                    score_release_factory(data) if score_release_factory else exact_clipped_mean
                ),
            )
        )
    return sites


def _report(
    site: Site,
    round_index: int,
    phase: Phase,
    training: LocalTrainingResult | None,
    clipped: int,
    *,
    evaluate: bool,
) -> SiteReport:
    """The site's own record of a round; test metrics only when ``evaluate``."""
    score = site.last_score
    return SiteReport(
        site=site.name,
        tier=site.data.tier,
        round_index=round_index,
        phase=phase,
        training=training,
        omega=score[0] if score else None,
        prior_value=score[1] if score else None,
        clipped_coordinates=clipped,
        personalised=site.evaluate_personalised() if evaluate and training is not None else None,
        global_=site.evaluate_global() if evaluate else None,
    )


@dataclass(frozen=True, kw_only=True)
class _Round:
    strategy: MethodStrategy
    aggregator: Aggregator
    prior: ConvexPrior | None
    evaluate: bool
    evaluate_global: bool
    context: bytes
    gate: RoundGate | None = None


def _training_round(
    spec: _Round, state: GlobalState, sites: list[Site]
) -> tuple[GlobalState, ServerLog | None]:
    """One federated round: local training, contributions, aggregation, server update."""
    strategy = spec.strategy
    layout = contribution_layout(strategy, state, spec.prior)
    inputs = {}
    for site in sites:
        site.receive(state)
        training, clipped, declined = None, 0, False
        if site.data.tier is Tier.TRAIN:
            declined = spec.gate is not None and not spec.gate(site.name, state.round_index)
            if not declined:
                training = site.train(strategy, start_from_gamma=strategy.resets_to_gamma)
                if layout is not None:
                    inputs[site.name], clipped = site.contribute(strategy, layout)
        report = _report(
            site, state.round_index, Phase.TRAIN, training, clipped, evaluate=spec.evaluate
        )
        report = dataclasses.replace(report, declined=declined)
        if not spec.evaluate_global:
            report = dataclasses.replace(report, global_=None)
        site.record(report)
    unchanged = GlobalState(round_index=state.round_index + 1, gamma=state.gamma, psi=state.psi)
    if layout is None:
        return unchanged, None
    if not inputs:
        log.warning(
            "round %d: every training site declined; the model is unchanged", state.round_index
        )
        return unchanged, None
    try:
        result = spec.aggregator.aggregate(
            round_index=state.round_index, layout=layout, inputs=inputs, context=spec.context
        )
    except AbortedError as exc:
        log.warning("round %d aborted (%s); the model is unchanged", state.round_index, exc)
        return unchanged, None
    mask = spec.prior.psi_nonneg_mask() if spec.prior is not None else None
    return strategy.server_update(state, result, mask)


def _finetune(strategy: MethodStrategy, state: GlobalState, site: Site, calls: int) -> None:
    """A fine-tune-tier site: local training under the final (gamma, psi), ``calls`` times."""
    site.receive(state)
    for i in range(calls):
        training = site.train(strategy, start_from_gamma=strategy.resets_to_gamma and i == 0)
        if strategy.uses_icnn:
            site.score()
        report = _report(site, state.round_index + i, Phase.FINETUNE, training, 0, evaluate=False)
        site.record(report)


def run_simulation(
    config: SimulationConfig,
    dataset: FederatedDataset,
    aggregator: Aggregator,
    trainer_factory: TrainerFactory,
    progress: ProgressFn | None = None,
    score_release_factory: ScoreReleaseFactory | None = None,
    *,
    round_gate: RoundGate | None = None,
    layout_check: LayoutCheck | None = None,
) -> SimulationResult:
    """Run ``config.method`` on ``dataset`` for ``config.rounds`` rounds; see module docstring.

    ``score_release_factory`` (default: the exact clipped mean) chooses how each
    site releases the mean log-likelihood inside its FedMAP score;
    ``round_gate`` lets a training site decline a round (its privacy budget);
    ``layout_check`` vets the contribution layout before any site trains.
    """
    start = time.perf_counter()
    if not dataset.by_tier(Tier.TRAIN):
        raise ConfigError(f"dataset {dataset.name!r} has no training-tier site")
    strategy = make_strategy(config)
    state, prior = initial_state(
        config, n_features=len(dataset.feature_names), n_classes=dataset.n_classes
    )
    sites = build_sites(
        config, dataset, trainer_factory, state, prior is not None, score_release_factory
    )
    layout = contribution_layout(strategy, state, prior)
    if layout is not None and layout_check is not None:
        layout_check(layout)
    logs: list[ServerLog] = []
    finetune = [s for s in sites if s.data.tier is Tier.FINETUNE]
    total = config.rounds + (1 if finetune else 0)
    for r in range(config.rounds):
        every = config.evaluate_every
        spec = _Round(
            strategy=strategy,
            aggregator=aggregator,
            prior=prior,
            evaluate=every > 0 and (r + 1) % every == 0,
            evaluate_global=strategy.aggregates,
            context=round_context(config, state),
            gate=round_gate,
        )
        state, log = _training_round(spec, state, sites)
        if log is not None:
            logs.append(log)
        if progress is not None:
            progress("training", r + 1, total)
    for site in finetune:
        _finetune(strategy, state, site, config.finetune_rounds)
    if finetune and progress is not None:
        progress("fine-tuning", total, total)
    results = []
    for site in sites:
        site.receive(state)
        results.append(
            SiteResult(
                site=site.name,
                tier=site.data.tier,
                n_train=site.n_train,
                n_test=site.data.n_test,
                personalised=site.evaluate_personalised(),
                global_=site.evaluate_global() if strategy.aggregates else None,
            )
        )
    return SimulationResult(
        method=config.method.value,
        dataset=dataset.name,
        rounds=config.rounds,
        seed=config.seed,
        sites=tuple(results),
        reports=tuple(r for site in sites for r in site.reports),
        server_logs=tuple(logs),
        final_state=state if strategy.aggregates else None,
        n_theta=int(state.gamma.size),
        n_psi=0 if state.psi is None else int(state.psi.size),
        wall_seconds=time.perf_counter() - start,
    )
