"""Composes an in-process run: SecAgg among the training sites plus each site's own DP.

``run_private_simulation`` is what ``fedmap-secure simulate`` (and the
privacy-utility benchmark) runs: it builds the aggregator from ``[secagg]``
(``SecureAggregator`` for the training-tier sites, or ``PlainSum``), vets the
contribution layout against the SecAgg encoding before any site trains,
builds one ``runtime.SiteRuntime`` per site (its policy: the run's
``[privacy]``; its state folder: a fresh ``OUT/sites/<site>``, or
``SITE_STATE/<site>`` kept across runs), runs them with the
``runtime.ServerRuntime`` over the in-process channel and returns the result
with the ``privacy`` section of summary.json.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedmap_secure.aggregation import Aggregator, PlainSum, VectorLayout
from fedmap_secure.client_dp.rounds import ClientLevelRounds
from fedmap_secure.client_dp.site_guard import in_memory_guards
from fedmap_secure.config.privacy import PrivacyConfig
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.runtime.client_level import client_level_rounds
from fedmap_secure.runtime.inprocess import RunSite, run_sites
from fedmap_secure.runtime.parallel import SitePool, pool_of, resolve_workers
from fedmap_secure.runtime.parallel_secagg import PooledSecureAggregator
from fedmap_secure.runtime.privacy import (
    AfterCharge,
    describe_differential_privacy,
    simulated_policy,
)
from fedmap_secure.runtime.results import ProgressFn, SimulationResult, TrainerFactory
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator, SiteEncodeGuard
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.round_encoder import RoundEncoderFactory
from fedmap_secure.transcript.aggregator import RecordingSecureAggregator
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.store import SiteRecordWriter, fresh_chain, write_roster

log = logging.getLogger(__name__)


CLIENT_DP_LEDGER = Path("server") / "client-dp"
"""Where a run keeps the server's client-level ledger, relative to its output folder."""


def secagg_config(config: SimulationConfig, dataset: FederatedDataset) -> SecAggConfig | None:
    """The SecAgg parameters over the training-tier sites, or None for a plain sum."""
    s = config.secagg
    sites = [d.name for d in dataset.by_tier(Tier.TRAIN)]
    if not s.enabled or len(sites) < 2:
        return None
    return SecAggConfig.for_threat_model(
        n=len(sites),
        dropout_fraction=s.dropout_fraction,
        corrupt_fraction=s.corrupt_fraction,
        bits=s.bits,
        security_parameter=s.security_parameter,
        max_colluding_sites=s.max_colluding_sites,
    )


def open_client_level(
    config: SimulationConfig, dataset: FederatedDataset, out_dir: Path
) -> ClientLevelRounds:
    """Client-level DP of this run with a fresh server ledger under ``out_dir``/server/client-dp.

    Refused without secure aggregation: a plain sum would show the server each
    site's vector with only its own share of the noise.
    """
    secagg = secagg_config(config, dataset)
    if secagg is None:
        raise ConfigError(
            "client-level DP adds each site's noise share inside secure aggregation; it "
            "needs secure aggregation over at least 2 training sites (drop --no-secagg)"
        )
    return client_level_rounds(config, secagg, fresh_client_dp_state(out_dir))


def fresh_client_dp_state(out_dir: Path) -> Path:
    """``out_dir``/server/client-dp, refused if it exists (an earlier run's ledger)."""
    state = out_dir / CLIENT_DP_LEDGER
    if state.exists():
        raise ConfigError(
            f"client-level ledger {str(state)!r} already exists: it would keep spending an "
            "earlier run's budget; choose a new --out or remove it"
        )
    return state


def build_aggregator(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path | None = None,
    *,
    encoders: RoundEncoderFactory | None = None,
    noise_guards: Mapping[str, SiteEncodeGuard] | None = None,
) -> Aggregator:
    """``SecureAggregator`` over the training-tier sites per ``[secagg]``, or ``PlainSum``.

    With ``out_dir`` it is the recording variant: each round's transcript goes
    to ``out_dir``/transcripts/, each site's record to ``out_dir``/site-records/
    and the roster of the (fresh, per-run) identity keys to ``out_dir``/roster.json,
    for ``fedmap-secure verify-transcript``.
    """
    secagg = secagg_config(config, dataset)
    if secagg is None:
        if config.secagg.enabled:
            log.warning("secure aggregation needs >= 2 training sites; using a plain sum")
        return PlainSum()
    sites = [d.name for d in dataset.by_tier(Tier.TRAIN)]
    identities = {site: IdentityKey.generate(os.urandom) for site in sites}
    if out_dir is None:
        return SecureAggregator(
            identities=identities, config=secagg, encoders=encoders, noise_guards=noise_guards
        )
    aggregator = RecordingSecureAggregator(
        identities=identities,
        config=secagg,
        chain=fresh_chain(out_dir),
        site_sink=SiteRecordWriter(out_dir),
        encoders=encoders,
        noise_guards=noise_guards,
    )
    write_roster(out_dir / "roster.json", aggregator.roster)
    return aggregator


def build_pooled_aggregator(
    config: SimulationConfig, dataset: FederatedDataset, out_dir: Path | None, pool: SitePool
) -> Aggregator:
    """``build_aggregator`` for sites in a ``SitePool``: each site's SecAgg client (identity
    key, encoding, masking, its own site record) runs in its worker
    (``runtime.parallel_secagg``); the server and the transcript chain stay here."""
    secagg = secagg_config(config, dataset)
    if secagg is None:
        if config.secagg.enabled:
            log.warning("secure aggregation needs >= 2 training sites; using a plain sum")
        return PlainSum()
    sites = [d.name for d in dataset.by_tier(Tier.TRAIN)]
    if out_dir is None:
        return PooledSecureAggregator(pool=pool, sites=sites, config=secagg)
    aggregator = PooledSecureAggregator(
        pool=pool, sites=sites, config=secagg, chain=fresh_chain(out_dir), record_out=out_dir
    )
    write_roster(out_dir / "roster.json", aggregator.roster)
    return aggregator


def describe_transcripts(aggregator: Aggregator, out_dir: Path) -> dict[str, Any] | None:
    """Where the transcripts are and the newest transcript's hash (None when not recorded)."""
    if isinstance(aggregator, PooledSecureAggregator) and aggregator.chain is not None:
        return describe_chain(aggregator.chain, out_dir)
    if not isinstance(aggregator, RecordingSecureAggregator):
        return None
    return describe_chain(aggregator.chain, out_dir)


def describe_chain(chain: TranscriptChain, out_dir: Path) -> dict[str, Any]:
    """The ``transcripts`` entry of a run that recorded ``chain`` under ``out_dir``."""
    head = chain.head
    return {
        "directory": str(out_dir / "transcripts"),
        "roster": str(out_dir / "roster.json"),
        "site_records": str(out_dir / "site-records"),
        "rounds": len(chain.transcripts),
        "head": None if head is None else head.transcript_hash().hex(),
        "verify": "fedmap-secure verify-transcript DIR/transcripts --roster DIR/roster.json "
        "--site-records DIR/site-records --head HEAD",
    }


class EncodingCheck:
    """The layout check of a ``SecureAggregator``: no wrap-around for the declared bounds.

    ``Quantizer.auto`` raises ``ConfigError`` when n * bound cannot be encoded
    in 2^(bits-1) - 1; the chosen fractional bits and the worst-case decoding
    error per field (``Quantizer.error_bound``) are recorded for the summary.
    """

    def __init__(self, aggregator: SecureAggregator | PooledSecureAggregator) -> None:
        self._aggregator = aggregator
        self.encoding: dict[str, Any] | None = None

    def __call__(self, layout: VectorLayout) -> None:
        n, bits = self._aggregator.config.n, self._aggregator.config.bits
        quantizer = Quantizer.auto(layout, n_max=n, bits=bits)
        bound = quantizer.error_bound(n)
        fields, start = {}, 0
        for f, frac in zip(layout.fields, quantizer.fractional_bits, strict=True):
            fields[f.name] = {
                "declared_bound": f.bound,
                "fractional_bits": frac,
                "max_sum_error": float(bound[start]),
            }
            start += f.length
        self.encoding = fields
        log.info("secure aggregation encoding: %s", fields)


SITES_DIR = "sites"
MODELS_DIR = "models"
"""Where a simulation writes its model files: ``OUT/models/global.json``, ``site-<name>.json``."""


def site_state_dir(out_dir: Path, site: str) -> Path:
    return out_dir / SITES_DIR / site


def releasing_sites(config: SimulationConfig, dataset: FederatedDataset) -> list[str]:
    """The sites that keep a ledger in this run (a federated method): the training tier
    (its contributions) and the fine-tune tier (its personalised model, fine-tuned under
    its own policy by the same ``SiteRuntime.finish`` as a deployed late site)."""
    if config.method is Method.LOCAL:
        return []
    tiers = (Tier.TRAIN, Tier.FINETUNE) if config.finetune_rounds > 0 else (Tier.TRAIN,)
    return [s.name for s in dataset.sites if s.tier in tiers and s.n_train > 0]


def site_state_dirs(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    site_state: Path | None,
) -> dict[str, Path]:
    """Each releasing site's state folder: ``site_state``/<site> (kept across runs), or a
    fresh ``out_dir``/sites/<site> (refused if it exists: an earlier run's ledger)."""
    sites = releasing_sites(config, dataset)
    unknown = sorted({o.site for o in config.privacy.site} - set(sites))
    if unknown and config.privacy.enabled:
        raise ConfigError(f"privacy.site names sites that are not private here: {unknown}")
    if site_state is not None:
        return {site: site_state / site for site in sites}
    if not config.privacy.enabled:
        return {}
    dirs = {site: site_state_dir(out_dir, site) for site in sites}
    for state in dirs.values():
        if state.exists():
            raise ConfigError(
                f"site state directory {str(state)!r} already exists: its ledger would keep "
                "spending an earlier run's budget; choose a new --out, remove it, or pass "
                "--site-state DIR to keep one ledger per site across runs"
            )
    return dirs


def budget_scope(out_dir: Path, site_state: Path | None) -> str:
    """How long the sites' budgets last (summary.json and the console say it)."""
    if site_state is None:
        return (
            f"per run: fresh ledgers under {out_dir / SITES_DIR}/<site>; pass --site-state DIR "
            "to keep one ledger per site across runs"
        )
    return f"across runs: one ledger per site under {site_state}/<site>"


@dataclass(frozen=True, kw_only=True)
class PrivateSimulation:
    result: SimulationResult
    privacy: dict[str, Any]
    epsilon_spent: dict[str, float] | None


def _clipped(result: SimulationResult) -> dict[str, int]:
    return {
        "by_sites_before_contributing": sum(r.clipped_coordinates for r in result.reports),
        "by_secure_aggregation": sum(log.clipped_coordinates for log in result.server_logs),
    }


def simulated_setups(
    config: SimulationConfig,
    dataset: FederatedDataset,
    state_dirs: dict[str, Path],
    *,
    trainer_factory: TrainerFactory | None = None,
    after_charge: AfterCharge | None = None,
    model_dir: Path | None = None,
) -> list[SiteSetup]:
    """One ``SiteSetup`` per site, its policy the run's own ``[privacy]`` for that site;
    its personalised model goes to ``model_dir``/site-<name>.json (if given)."""
    return [
        SiteSetup(
            data=data,
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            schema=dataset.schema,
            policy=simulated_policy(config.privacy, data.name, "the run's [privacy]"),
            state_dir=state_dirs.get(data.name),
            model_path=None if model_dir is None else model_dir / f"site-{data.name}.json",
            plain_trainer=trainer_factory,
            after_charge=after_charge,
        )
        for data in dataset.sites
    ]


class SitePrivacyView(Protocol):
    """A site's privacy as the summary reads it (``SitePrivacy`` or a pooled site's copy)."""

    @property
    def privacy(self) -> PrivacyConfig: ...

    def describe_site(self) -> dict[str, Any]: ...


class SummarySite(RunSite, Protocol):
    """A site of a finished run, as ``describe_sites`` reads it."""

    @property
    def setup(self) -> SiteSetup: ...

    @property
    def privacy(self) -> SitePrivacyView | None: ...

    def close(self) -> None: ...


def run_site_objects(
    config: SimulationConfig,
    dataset: FederatedDataset,
    setups: list[SiteSetup],
    workers: int | str,
    *,
    batched: bool = False,
) -> list[SummarySite]:
    """The run's sites: ``SiteRuntime``s here (one worker), or handles on a ``SitePool``
    (``batched``: each worker batches its sites' training, ``runtime.batched``).

    A run with an ``after_charge`` observer is serial (the observer lives here).
    """
    count = resolve_workers(workers, len(setups))
    if count > 1 and any(setup.after_charge is not None for setup in setups):
        log.info("an after_charge observer runs in this process: the sites run serially")
        count = 1
    if count > 1 and multiprocessing.current_process().daemon:
        # e.g. a sweep's pool worker: a daemonic process may not start children
        log.warning("this process is a daemonic worker: the sites run serially (workers=1)")
        count = 1
    if count <= 1:
        return [SiteRuntime(setup) for setup in setups]
    return list(SitePool(setups, count, batched=batched).sites(setups))


def run_private_simulation(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    aggregator: Aggregator | None = None,
    after_charge: AfterCharge | None = None,
    trainer_factory: TrainerFactory | None = None,
    site_state: Path | None = None,
    workers: int | str = 1,
    site_batching: bool = True,
) -> PrivateSimulation:
    """Run with SecAgg and DP as configured; ledgers in ``site_state``/<site> or a fresh
    ``out_dir``/sites/<site>.

    ``trainer_factory`` is used only when DP is off (default: non-private Adam MAP).
    ``workers``: the sites' rounds in that many local worker processes
    (``runtime.parallel``; ``"auto"``: ``resolve_workers``; 1, the default: serial), each
    site's SecAgg client in its worker (``build_pooled_aggregator``) unless client-level DP
    or a caller's ``aggregator`` keeps SecAgg here (``benchmarks/results/sim_sites_100.md``).
    ``site_batching`` (a run with DP off): the sites of one process train together
    (``runtime.batched``: the same site code, weights equal up to float rounding).
    """
    if config.client_dp.enabled and aggregator is not None:
        raise ConfigError("client-level DP builds its own secure aggregator; pass none")
    state_dirs = site_state_dirs(config, dataset, out_dir, site_state)
    setups = simulated_setups(
        config,
        dataset,
        state_dirs,
        trainer_factory=trainer_factory,
        after_charge=after_charge,
        model_dir=out_dir / MODELS_DIR,
    )
    # Worker processes (if any) start first: before any key or ledger of the server exists.
    batched = site_batching and not config.privacy.enabled
    sites = run_site_objects(config, dataset, setups, workers, batched=batched)
    client = None
    try:
        if config.client_dp.enabled:
            client = open_client_level(config, dataset, out_dir)
        encoders = client.encoder if client is not None else None
        guards = None
        if client is not None:  # each site's own record of the noisy vectors it sends
            guards = in_memory_guards(
                [d.name for d in dataset.by_tier(Tier.TRAIN)],
                epsilon=config.client_dp.epsilon,
                delta=config.client_dp.delta,
            )
        pool = pool_of(sites)
        if aggregator is not None:
            agg = aggregator
        elif pool is not None and client is None:  # each site's SecAgg client in its worker
            agg = build_pooled_aggregator(config, dataset, out_dir, pool)
        else:
            agg = build_aggregator(config, dataset, out_dir, encoders=encoders, noise_guards=guards)
        check = None
        if isinstance(agg, SecureAggregator | PooledSecureAggregator) and client is None:
            check = EncodingCheck(agg)
        result = run_sites(
            config,
            dataset,
            sites,
            agg,
            progress=progress,
            layout_check=client.check_layout if client is not None else check,
            model_dir=out_dir / MODELS_DIR,
            batched=batched,
        )
        secure = {**agg.describe(), "encoding": check.encoding if check else None}
        secure["clipped_coordinates"] = _clipped(result)
        secure["transcripts"] = describe_transcripts(agg, out_dir)
        dp, spent = describe_sites(config, sites, budget_scope(out_dir, site_state))
        privacy = {
            "secure_aggregation": secure,
            "differential_privacy": dp,
            "client_level_dp": client.describe() if client is not None else None,
            "metrics_released": False,
        }
        return PrivateSimulation(result=result, privacy=privacy, epsilon_spent=spent)
    finally:
        for site in sites:
            site.close()
        if client is not None:
            client.ledger.close()


def describe_sites(
    config: SimulationConfig, sites: Sequence[SummarySite], scope: str
) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
    """``privacy.differential_privacy`` and epsilon spent, from the private sites' ledgers
    (None, None when DP is off)."""
    private = [s.privacy for s in sites if s.privacy is not None]
    if not config.privacy.enabled:
        return None, None
    entries = {}
    for site in sites:
        if site.privacy is not None and site.setup.state_dir is not None:
            entries[site.name] = {
                **site.privacy.describe_site(),
                "ledger": str(site.setup.state_dir),
            }
    dp = describe_differential_privacy(private[0].privacy if private else config.privacy, entries)
    dp["budget_scope"] = scope
    return dp, {name: float(entry["epsilon_spent"]) for name, entry in entries.items()}
