"""``run_one``: the ONE place where a sweep touches the simulation engine.

Everything engine-specific (configuration, dataset, aggregator, trainer,
privacy) is chosen here from a ``RunSpec``; the runner, backends and report
only see the result directory. To retarget the sweep at new engine builders
(DP-SGD, score release), change ``_privacy_parts`` only.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fedmap_secure.aggregation import Aggregator, PlainSum
from fedmap_secure.config.loader import load_config, parse_config
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.simulation import ScoreReleaseFactory, TrainerFactory
from fedmap_secure.experiments.sweep import store
from fedmap_secure.experiments.sweep.communication import (
    RoundBytes,
    plain_round_bytes,
    secagg_round_bytes,
)
from fedmap_secure.experiments.sweep.metering import MeteredAggregator
from fedmap_secure.experiments.sweep.spec import RunSpec, SweepMethod
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig


def simulation_config(spec: RunSpec) -> SimulationConfig:
    """The spec's simulation TOML (or the packaged default) with the spec's overrides."""
    base = (
        load_config(None)
        if spec.simulation_toml is None
        else parse_config(spec.simulation_toml, source=f"{spec.run_id}/simulation_toml")
    )
    changes: dict[str, Any] = {"seed": spec.seed}
    if spec.method is not SweepMethod.POOLED:
        changes["method"] = Method(spec.method.value)
    if spec.rounds is not None:
        changes["rounds"] = spec.rounds
    if spec.epochs is not None:
        changes["training"] = dataclasses.replace(base.training, epochs=spec.epochs)
    return dataclasses.replace(base, **changes)


def _aggregator(spec: RunSpec, dataset: FederatedDataset) -> Aggregator:
    if not spec.secure_aggregation:
        return PlainSum()
    from fedmap_secure.secagg.inprocess import SecureAggregator

    return SecureAggregator.simulated([s.name for s in dataset.by_tier(Tier.TRAIN)])


def _privacy_parts(
    spec: RunSpec, config: SimulationConfig
) -> tuple[TrainerFactory, ScoreReleaseFactory | None, dict[str, Any] | None]:
    """Trainer factory, score release and the summary's DP block of the run.

    Retarget here after the DP/SecAgg integration: build the DP-SGD trainers,
    score release and per-site ledgers from (spec.epsilon, spec.delta).
    """
    if spec.epsilon is not None:
        raise ConfigError(
            f"differential privacy (epsilon {spec.epsilon:g}) is not wired into the "
            "simulation engine of this build"
        )
    from fedmap_secure.training.local import AdamMapTrainer

    def factory(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
        return AdamMapTrainer(training)

    return factory, None, None


def _communication(spec: RunSpec, metered: MeteredAggregator) -> dict[str, Any]:
    records = metered.records
    if not records:
        return {
            "aggregation": None,
            "rounds": 0,
            "bytes_per_round": None,
            "seconds_per_round": None,
        }
    last = records[-1]
    rb: RoundBytes
    if spec.secure_aggregation:
        described = metered.describe()
        bits, k = int(str(described["bits"])), int(str(described["k"]))
        rb = secagg_round_bytes(
            layout_size=last.layout_size, sites=last.contributors, bits=bits, k=k
        )
    else:
        rb = plain_round_bytes(layout_size=last.layout_size, sites=last.contributors)
    return {
        "aggregation": "secagg" if spec.secure_aggregation else "plain",
        "rounds": len(records),
        "layout_size": last.layout_size,
        "contributors": last.contributors,
        "bytes_per_round": {"payload": rb.payload, "overhead": rb.overhead, "total": rb.total},
        "seconds_per_round": sum(r.seconds for r in records) / len(records),
    }


def run_one(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Run ``spec`` with the simulation engine; write out_dir/summary.json and metrics.csv.

    The engine's summary gets two extra blocks: ``sweep`` (run id, spec, total
    seconds including data loading) and ``communication`` (aggregation rounds,
    bytes and seconds per round; see ``communication``).
    """
    from fedmap_secure.data import load_dataset
    from fedmap_secure.experiments.driver import simulate_to_dir

    start = time.perf_counter()
    config = simulation_config(spec)
    dataset = load_dataset(spec.dataset, seed=spec.seed)
    trainer_factory, score_release, dp = _privacy_parts(spec, config)
    metered = MeteredAggregator(_aggregator(spec, dataset))
    summary = simulate_to_dir(
        config=config,
        dataset=dataset,
        aggregator=metered,
        trainer_factory=trainer_factory,
        out_dir=out_dir,
        console=Console(quiet=True),
        pooled=spec.method is SweepMethod.POOLED,
        differential_privacy=dp,
        score_release_factory=score_release,
    )
    summary["communication"] = _communication(spec, metered)
    summary["sweep"] = {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "total_seconds": time.perf_counter() - start,
    }
    store.write_json(out_dir / store.SUMMARY_FILE, summary)
    return summary
