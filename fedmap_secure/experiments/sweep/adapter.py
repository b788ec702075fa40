"""``run_one``: the ONE place where a sweep touches the simulation engine.

Everything engine-specific is chosen here from a ``RunSpec``: the simulation
configuration (the spec's TOML or the packaged default, then the spec's
method, seed, rounds, epochs, ``[privacy]`` epsilon/delta/enabled,
``[secagg]`` enabled and ``[client_dp]`` enabled/epsilon/delta/mechanism),
the dataset, and the call into ``experiments.driver.simulate_to_dir`` (the
same private pipeline as ``fedmap-secure simulate``: SecAgg among the
training sites, per-site DP with durable ledgers under the run's ``sites/``
directory, client-level DP with the server's ledger).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from fedmap_secure.config.loader import load_config, parse_config
from fedmap_secure.config.privacy import ClientDpMechanism, ClientDpSettings
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.experiments.sweep import store
from fedmap_secure.experiments.sweep.communication import (
    RoundBytes,
    plain_round_bytes,
    secagg_round_bytes,
)
from fedmap_secure.experiments.sweep.spec import RunSpec, SweepMethod


def simulation_config(spec: RunSpec) -> SimulationConfig:
    """The spec's simulation TOML (or the packaged default) with the spec's overrides."""
    base = (
        load_config(None)
        if spec.simulation_toml is None
        else parse_config(spec.simulation_toml, source=f"{spec.run_id}/simulation_toml")
    )
    privacy = dataclasses.replace(
        base.privacy,
        enabled=spec.epsilon is not None,
        epsilon=base.privacy.epsilon if spec.epsilon is None else spec.epsilon,
        delta=spec.delta,
    )
    changes: dict[str, Any] = {
        "seed": spec.seed,
        "privacy": privacy,
        "secagg": dataclasses.replace(base.secagg, enabled=spec.secure_aggregation),
        "client_dp": _client_dp(base.client_dp, spec),
    }
    if spec.method is not SweepMethod.POOLED:
        changes["method"] = Method(spec.method.value)
    if spec.rounds is not None:
        changes["rounds"] = spec.rounds
    if spec.epochs is not None:
        changes["training"] = dataclasses.replace(base.training, epochs=spec.epochs)
    return dataclasses.replace(base, **changes)


def _client_dp(base: ClientDpSettings, spec: RunSpec) -> ClientDpSettings:
    """Client-level DP exactly when the spec has a client epsilon (the spec decides)."""
    if spec.client_epsilon is None:
        return dataclasses.replace(base, enabled=False)
    return dataclasses.replace(
        base,
        enabled=True,
        epsilon=spec.client_epsilon,
        delta=base.delta if spec.client_delta is None else spec.client_delta,
        mechanism=(
            base.mechanism
            if spec.client_mechanism is None
            else ClientDpMechanism(spec.client_mechanism)
        ),
    )


def communication(
    config: SimulationConfig, dataset: FederatedDataset, summary: dict[str, Any], pooled: bool
) -> dict[str, Any]:
    """Bytes of one aggregation round (see ``communication``), from the run's layout.

    With client-level DP the sites mask the rotated vector, zero-padded to a
    power of two: its length (the plan's ``padded_dimension``) is the SecAgg
    vector length, reported as ``vector_length``.
    """
    from fedmap_secure.fedmap.methods import make_strategy

    layout = None
    if not pooled:
        params = summary["parameters"]
        layout = make_strategy(config).layout(n_theta=params["theta"], n_psi=params["psi"])
    if layout is None:
        return {"aggregation": None, "layout_size": None, "bytes_per_round": None}
    sites = sum(1 for s in dataset.by_tier(Tier.TRAIN) if s.n_train > 0)
    secure = summary["privacy"]["secure_aggregation"] or {}
    client_dp = summary["privacy"].get("client_level_dp") or {}
    length = int((client_dp.get("plan") or {}).get("padded_dimension") or layout.size)
    rb: RoundBytes
    if secure.get("k") is not None:
        rb = secagg_round_bytes(
            layout_size=length, sites=sites, bits=int(secure["bits"]), k=int(secure["k"])
        )
    else:
        rb = plain_round_bytes(layout_size=length, sites=sites)
    return {
        "aggregation": "secagg" if secure.get("k") is not None else "plain",
        "layout_size": layout.size,
        "vector_length": length,
        "contributors": sites,
        "bytes_per_round": {"payload": rb.payload, "overhead": rb.overhead, "total": rb.total},
    }


def run_one(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Run ``spec``; write out_dir/summary.json, metrics.csv (and DP ledgers); return the summary.

    The engine's summary gets two extra blocks: ``communication`` (layout
    size and bytes per aggregation round) and ``sweep`` (run id, spec, total
    seconds including data loading).
    """
    from fedmap_secure.data import load_dataset
    from fedmap_secure.experiments.driver import simulate_to_dir

    start = time.perf_counter()
    config = simulation_config(spec)
    dataset = load_dataset(spec.dataset, seed=spec.seed)
    pooled = spec.method is SweepMethod.POOLED
    summary = simulate_to_dir(
        config=config,
        dataset=dataset,
        out_dir=out_dir,
        console=Console(quiet=True),
        pooled=pooled,
    )
    summary["communication"] = communication(config, dataset, summary, pooled)
    summary["sweep"] = {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "total_seconds": time.perf_counter() - start,
    }
    store.write_json(out_dir / store.SUMMARY_FILE, summary)
    return summary
