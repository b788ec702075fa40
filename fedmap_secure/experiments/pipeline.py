"""The private, secure simulation pipeline: SecAgg among the training sites plus per-site DP.

``run_private_simulation`` is what ``fedmap-secure simulate`` (and the
privacy-utility benchmark) runs: it builds the aggregator from ``[secagg]``
(``SecureAggregator`` for the training-tier sites, or ``PlainSum``), vets the
contribution layout against the SecAgg encoding before any site trains,
opens every private site's ledger (``PrivateRun``), runs the engine with
the sites' round gates, DP trainers and score releases, and returns the
result with the ``privacy`` section of summary.json.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap_secure.aggregation import Aggregator, PlainSum, VectorLayout
from fedmap_secure.client_dp.rounds import ClientLevelRounds
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.private_run import PrivateRun
from fedmap_secure.experiments.private_site import AfterCharge
from fedmap_secure.experiments.simulation import (
    ProgressFn,
    SimulationResult,
    TrainerFactory,
    run_simulation,
)
from fedmap_secure.privacy.accountant_base import AccountantName
from fedmap_secure.privacy.accountants import create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.ledger_store import open_site_ledger
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.round_encoder import RoundEncoderFactory
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
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


def client_level_rounds(
    config: SimulationConfig, secagg: SecAggConfig, state: Path
) -> ClientLevelRounds:
    """``ClientLevelRounds`` of ``config.client_dp`` over ``secagg``, its ledger in ``state``.

    The ledger is opened (created if absent): the gRPC server resumes it on restart.
    """
    c = config.client_dp
    ledger = open_site_ledger(
        state,
        budget=Budget(epsilon=c.epsilon, delta=c.delta),
        accountant=create_accountant(AccountantName.DP_ACCOUNTING_RDP),
    )
    return ClientLevelRounds(c, rounds=config.rounds, secagg=secagg, ledger=ledger)


def build_aggregator(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path | None = None,
    *,
    encoders: RoundEncoderFactory | None = None,
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
        return SecureAggregator(identities=identities, config=secagg, encoders=encoders)
    aggregator = RecordingSecureAggregator(
        identities=identities,
        config=secagg,
        chain=fresh_chain(out_dir),
        site_sink=SiteRecordWriter(out_dir),
        encoders=encoders,
    )
    write_roster(out_dir / "roster.json", aggregator.roster)
    return aggregator


def describe_transcripts(aggregator: Aggregator, out_dir: Path) -> dict[str, Any] | None:
    """Where the transcripts are and the newest transcript's hash (None when not recorded)."""
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

    def __init__(self, aggregator: SecureAggregator) -> None:
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


def run_private_simulation(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    *,
    progress: ProgressFn | None = None,
    aggregator: Aggregator | None = None,
    after_charge: AfterCharge | None = None,
    trainer_factory: TrainerFactory | None = None,
) -> PrivateSimulation:
    """Run with SecAgg and DP as configured; ledgers go to ``out_dir``/sites/<site>.

    ``trainer_factory`` is used only when DP is off (default: non-private Adam MAP).
    """
    if config.client_dp.enabled and aggregator is not None:
        raise ConfigError("client-level DP builds its own secure aggregator; pass none")
    client = open_client_level(config, dataset, out_dir) if config.client_dp.enabled else None
    private: PrivateRun | None = None
    try:
        encoders = client.encoder if client is not None else None
        agg = aggregator or build_aggregator(config, dataset, out_dir, encoders=encoders)
        private = (
            PrivateRun.open(config, dataset, out_dir, after_charge=after_charge)
            if config.privacy.enabled
            else None
        )
        return _run(config, dataset, out_dir, agg, private, client, progress, trainer_factory)
    finally:
        if private is not None:
            private.close()
        if client is not None:
            client.ledger.close()


def _run(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    agg: Aggregator,
    private: PrivateRun | None,
    client: ClientLevelRounds | None,
    progress: ProgressFn | None,
    trainer_factory: TrainerFactory | None,
) -> PrivateSimulation:
    """The engine run and summary.json's ``privacy`` section (ledgers opened by the caller)."""
    check = EncodingCheck(agg) if isinstance(agg, SecureAggregator) and client is None else None
    result = run_simulation(
        config,
        dataset,
        agg,
        private.trainer_factory() if private else (trainer_factory or _plain_trainer),
        progress,
        private.score_release_factory() if private else None,
        round_gate=private.admit if private else None,
        layout_check=client.check_layout if client is not None else check,
    )
    secure = {**agg.describe(), "encoding": check.encoding if check else None}
    secure["clipped_coordinates"] = _clipped(result)
    secure["transcripts"] = describe_transcripts(agg, out_dir)
    spent = private.epsilon_spent() if private else None
    privacy = {
        "secure_aggregation": secure,
        "differential_privacy": (
            None if private is None or spent is None else private.describe(spent)
        ),
        "client_level_dp": client.describe() if client is not None else None,
        "metrics_released": False,
    }
    return PrivateSimulation(result=result, privacy=privacy, epsilon_spent=spent)


def _plain_trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    from fedmap_secure.training.local import AdamMapTrainer

    return AdamMapTrainer(training)
