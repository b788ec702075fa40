"""The in-process transport: every site runtime and the server runtime in one process.

``InProcessChannel`` holds the ``SiteRuntime`` of every site. Each round it
hands every site the server's announcement after a round trip through the
same protobuf codec as gRPC (``transport.codec``: the bytes a site parses are
the bytes a gRPC site would receive), collects the training sites' vectors and
sums them with the run's ``Aggregator`` (``SecureAggregator`` or its recording
variant for SecAgg, ``PlainSum`` for ``--no-secagg``). Sites of other tiers
see every round too (they evaluate the global model every
``evaluate_every`` rounds) and decline with NO_DATA.

With ``batched`` (and every site a ``SiteRuntime`` of this process) the
sites' calls of a round go through ``runtime.batched.run_batched``: the same
site code in the same order, their non-private training computed for all of
them at once (weights equal up to float rounding; ``training.batched``).

``run_sites`` composes a whole run: the ``ServerRuntime`` over this channel,
then the final announcement, then each site's result. ``run_simulation`` is
the non-private engine (tests, benchmarks): DP off at every site.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import AggregateResult, Aggregator, VectorLayout
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import AbortedError, ConfigError
from fedmap_secure.fedmap.methods import GlobalState
from fedmap_secure.fedmap.site import SiteReport
from fedmap_secure.runtime.announcement import config_from_json, config_json
from fedmap_secure.runtime.channel import Answer, RoundPlan
from fedmap_secure.runtime.privacy import SitePolicy
from fedmap_secure.runtime.results import ProgressFn, SimulationResult, SiteResult, TrainerFactory
from fedmap_secure.runtime.server import LayoutCheck, ServerRuntime
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.transport import codec
from fedmap_secure.transport import messages as tm

log = logging.getLogger(__name__)

T = TypeVar("T")


def over_the_wire(message: tm.FedMapRound) -> tm.FedMapRound:
    """``message`` encoded to protobuf bytes and parsed back, as a gRPC site receives it."""
    data = codec.encode_server_message(message).SerializeToString()
    parsed = codec.parse_server_message(data, peer=SERVER_ID)
    if not isinstance(parsed, tm.FedMapRound):
        raise ConfigError("the codec did not round-trip a FedMapRound")
    return parsed


def inprocess_setup(plan: RoundPlan, layout_digest: bytes) -> tm.SecAggSetup:
    """The in-process stand-in of the gRPC server's ``SecAggSetup`` (layout and context)."""
    assert plan.layout is not None
    return tm.SecAggSetup(
        version=PROTOCOL_VERSION,
        session_id=plan.context,
        round_index=plan.state.round_index,
        sender=SERVER_ID,
        layout=plan.layout,
        context=plan.context,
        config_digest=layout_digest,
        roster_digest=layout_digest,
        stage_timeout_ms=1,
    )


class RunSite(Protocol):
    """What an in-process run needs of a site: a ``SiteRuntime``, or a handle on one that
    lives in a worker process (``runtime.parallel.PooledSite``)."""

    @property
    def name(self) -> str: ...

    @property
    def data(self) -> SiteData: ...

    @property
    def result(self) -> SiteResult | None: ...

    @property
    def reports(self) -> Sequence[SiteReport]: ...

    @property
    def model_file(self) -> Path | None: ...

    def prepare(self, config: SimulationConfig) -> None: ...

    def handle(self, opening: tm.RoundOpening) -> Answer: ...

    def train_round(
        self, config: SimulationConfig, state: GlobalState, layout: VectorLayout | None
    ) -> Answer: ...


class InProcessChannel:
    """The server channel of an in-process run (see the module docstring)."""

    def __init__(
        self, sites: Sequence[RunSite], aggregator: Aggregator, *, batched: bool = False
    ) -> None:
        self.sites = list(sites)
        self.aggregator = aggregator
        self.batched = batched and all(isinstance(s, SiteRuntime) for s in self.sites)

    def _each(self, call: Callable[[RunSite], T]) -> list[T]:
        """``call`` for every site in order (batched training: module docstring)."""
        if self.batched:
            from fedmap_secure.runtime.batched import run_batched

            return run_batched([functools.partial(call, site) for site in self.sites])
        return [call(site) for site in self.sites]

    def run_round(self, plan: RoundPlan) -> AggregateResult | None:
        r = plan.state.round_index
        if plan.layout is None:  # nothing is aggregated (--method local): sites train only
            config = config_from_json(plan.config_text)
            self._each(lambda site: site.train_round(config, plan.state, None))
            return None
        digest = hashlib.sha256(plan.config_text.encode()).digest()
        opening = over_the_wire(plan.opening(inprocess_setup(plan, digest)))
        inputs = {}
        answers = self._each(lambda site: site.handle(opening))
        for site, answer in zip(self.sites, answers, strict=True):
            if isinstance(answer, np.ndarray):
                inputs[site.name] = answer
        if not inputs:
            log.warning("round %d: every training site declined; the model is unchanged", r)
            return None
        try:
            return self.aggregator.aggregate(
                round_index=r, layout=plan.layout, inputs=inputs, context=plan.context
            )
        except AbortedError as exc:
            log.warning("round %d aborted (%s); the model is unchanged", r, exc)
            return None

    def publish_final(self, final: tm.FedMapRound) -> None:
        message = over_the_wire(final)
        self._each(lambda site: site.handle(message))


def run_sites(
    config: SimulationConfig,
    dataset: FederatedDataset,
    sites: Sequence[RunSite],
    aggregator: Aggregator,
    *,
    progress: ProgressFn | None = None,
    layout_check: LayoutCheck | None = None,
    model_dir: Path | None = None,
    batched: bool = False,
) -> SimulationResult:
    """Run ``config`` over ``sites`` in this process; the caller closes the sites.

    ``model_dir``: where the server writes the final global model (``global.pt``
    + ``.json``); the sites write their own (``SiteSetup.model_path``).
    ``batched``: the sites' non-private training batched (module docstring).
    """
    start = time.perf_counter()
    if not dataset.by_tier(Tier.TRAIN):
        raise ConfigError(f"dataset {dataset.name!r} has no training-tier site")
    finetune = any(s.data.tier is Tier.FINETUNE for s in sites)
    server = ServerRuntime(
        config=config,
        n_features=len(dataset.feature_names),
        n_classes=dataset.n_classes,
        channel=InProcessChannel(sites, aggregator, batched=batched),
        sites=[s.name for s in sites if s.data.tier is Tier.TRAIN],
        layout_check=layout_check,
        progress=progress,
        extra_steps=1 if finetune else 0,
        model_path=model_dir,
        schema=dataset.schema,
    )
    for site in sites:  # every site checks the run and opens its ledger before round 0
        site.prepare(config_from_json(config_json(config)))
    final = server.run()
    if finetune and progress is not None:
        progress("fine-tuning", config.rounds + 1, config.rounds + 1)
    results: list[SiteResult] = []
    for site in sites:
        if site.result is None:
            raise ConfigError(f"site {site.name!r} finished without a result")
        results.append(site.result)
    aggregates = server.strategy.aggregates
    models = {s.name: s.model_file for s in sites if s.model_file is not None}
    if server.model_file is not None:
        models["global"] = server.model_file
    return SimulationResult(
        method=config.method.value,
        dataset=dataset.name,
        rounds=config.rounds,
        seed=config.seed,
        sites=tuple(results),
        reports=tuple(r for site in sites for r in site.reports),
        server_logs=tuple(server.logs),
        final_state=final if aggregates else None,
        n_theta=int(final.gamma.size),
        n_psi=0 if final.psi is None else int(final.psi.size),
        wall_seconds=time.perf_counter() - start,
        model_files=models,
    )


def non_private(config: SimulationConfig) -> SimulationConfig:
    """``config`` with record-level DP off (the run every non-private site accepts)."""
    return dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, enabled=False))


def run_simulation(
    config: SimulationConfig,
    dataset: FederatedDataset,
    aggregator: Aggregator,
    trainer_factory: TrainerFactory | None = None,
    progress: ProgressFn | None = None,
    *,
    layout_check: LayoutCheck | None = None,
    batched: bool = False,
) -> SimulationResult:
    """The non-private engine: ``config`` with DP off, every site training with
    ``trainer_factory`` (default Adam MAP), summed by ``aggregator``; ``batched``:
    the sites' training batched (module docstring)."""
    config = non_private(config)
    policy = SitePolicy(privacy=config.privacy, source="run_simulation (non-private)")
    sites = [
        SiteRuntime(
            SiteSetup(
                data=data,
                feature_names=dataset.feature_names,
                n_classes=dataset.n_classes,
                schema=dataset.schema,
                policy=policy,
                plain_trainer=trainer_factory,
            )
        )
        for data in dataset.sites
    ]
    try:
        return run_sites(
            config,
            dataset,
            sites,
            aggregator,
            progress=progress,
            layout_check=layout_check,
            batched=batched,
        )
    finally:
        for site in sites:
            site.close()
