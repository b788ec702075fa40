"""``simulate --transport grpc``: the server here, one OS process per training site, on 127.0.0.1.

The driver creates a throwaway consortium in ``out_dir/grpc`` (test CA and
certificates, site identity keys, roster; plaintext only when ``insecure``),
starts the ``AggregationServer`` and FedMAP's server loop in this process, and
launches ``python -m fedmap_secure.transport.site_process JOB.json`` for each
training-tier site (``bits`` and, with client-level DP, the pinned
``[client_dp]`` settings go into each site's job). Each site process loads
the same dataset with the same seed, keeps only its own site, trains,
contributes through SecAgg+ over mutual TLS, evaluates on the final state and
writes its records (``site_records``). Like an in-process run, the server
records each round's transcript (``OUT/transcripts``, roster ``OUT/roster.json``)
and every site process its own site records (``OUT/site-records/<site>``), for
``fedmap-secure verify-transcript``. Fine-tune and unseen tiers take no part
in secure rounds; the driver fine-tunes/evaluates them on the final state in
this process, as the in-process engine does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from fedmap_secure.client_dp.rounds import ClientLevelRounds
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.pipeline import (
    client_level_rounds,
    describe_chain,
    fresh_client_dp_state,
)
from fedmap_secure.experiments.report import site_table, summary_dict, write_outputs
from fedmap_secure.experiments.simulation import SimulationResult, SiteResult
from fedmap_secure.fedmap.methods import ServerLog
from fedmap_secure.fedmap.site import SiteReport
from fedmap_secure.secagg.config import DEFAULT_BITS, Roster, SecAggConfig
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.store import fresh_chain
from fedmap_secure.transcript.store import write_roster as write_transcript_roster
from fedmap_secure.transport.client_dp_pin import pinned_client_dp
from fedmap_secure.transport.fedmap_server import serve_fedmap
from fedmap_secure.transport.fedmap_site import finish_offline
from fedmap_secure.transport.fedmap_wire import announcement, config_json
from fedmap_secure.transport.pki import (
    Deployment,
    create_identity,
    generate_deployment,
    load_roster,
    write_roster,
)
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.site_process import load_factories
from fedmap_secure.transport.site_records import read_records
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore

PrivacyCollector = Callable[[], tuple[dict[str, Any] | None, dict[str, float] | None]]


@dataclass(frozen=True, kw_only=True)
class GrpcSimulation:
    """How to run the sites: dataset spec (as for ``simulate``) and the threat model."""

    dataset_spec: str
    label_column: str | None = None
    dropout_fraction: float = 0.25
    corrupt_fraction: float = 0.0
    insecure: bool = False
    bits: int = DEFAULT_BITS
    join_timeout: float = 600.0
    stage_timeout: float = 60.0
    # ``module:function`` building each site's (trainer, score release) factories from its job
    # (site_process.load_factories); ``options`` is passed through as JSON.
    factories: str = "fedmap_secure.transport.site_process:plain_factories"
    options: Mapping[str, Any] = field(default_factory=dict)


def _consortium(root: Path, sites: list[str], insecure: bool) -> tuple[Roster, Path | None]:
    if not insecure:
        deployment = generate_deployment(root / "pki", sites)
        return load_roster(deployment.roster), root / "pki"
    keys = {s: create_identity(root / "pki" / "sites" / s / "identity.pem").public for s in sites}
    roster = Roster.from_mapping(keys)
    write_roster(root / "pki" / "roster.json", roster)
    return roster, None


def _job(
    root: Path,
    site: str,
    port: int,
    spec: GrpcSimulation,
    config: SimulationConfig,
    records: Path | None,
) -> Path:
    job = {
        "site": site,
        "address": f"127.0.0.1:{port}",
        "dataset": spec.dataset_spec,
        "label_column": spec.label_column,
        "seed": config.seed,
        "pki": None if spec.insecure else str(root / "pki"),
        "roster": str(root / "pki" / "roster.json"),
        "identity": str(root / "pki" / "sites" / site / "identity.pem"),
        "dropout_fraction": spec.dropout_fraction,
        "corrupt_fraction": spec.corrupt_fraction,
        "bits": spec.bits,
        "client_dp": pinned_client_dp(config),
        "result": str(root / "sites" / f"{site}.json"),
        "state_dir": str(root / "sites" / site),
        "site_records": None if records is None else str(records),
        "factories": spec.factories,
        "options": dict(spec.options),
    }
    path = root / "sites" / f"{site}.job.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(job, indent=2))
    return path


def server_secagg(spec: GrpcSimulation, n_sites: int) -> SecAggConfig:
    """The SecAgg parameters of a grpc run (every site process derives the same)."""
    return SecAggConfig.for_threat_model(
        n=n_sites,
        dropout_fraction=spec.dropout_fraction,
        corrupt_fraction=spec.corrupt_fraction,
        bits=spec.bits,
    )


def simulate_over_grpc(
    *,
    config: SimulationConfig,
    dataset: FederatedDataset,
    spec: GrpcSimulation,
    out_dir: Path,
    client_level: ClientLevelRounds | None = None,
    transcripts: TranscriptChain | None = None,
) -> SimulationResult:
    """Run ``config`` with the server here and one process per training site; see module doc.

    ``client_level`` (over ``server_secagg``): client-level DP, charged to its
    ledger before each round opens; each site process plans the same noise
    from its job's pinned ``[client_dp]`` settings.
    ``transcripts`` (e.g. ``store.fresh_chain(out_dir)``): the server records
    each round into it, ``out_dir``/roster.json is written and each site
    process writes its own records to ``out_dir``/site-records/<site>/.
    """
    start = time.perf_counter()
    root = out_dir / "grpc"
    training = [s.name for s in dataset.by_tier(Tier.TRAIN)]
    if len(training) < 2:
        raise ConfigError("secure aggregation over gRPC needs at least 2 training sites")
    roster, pki = _consortium(root, training, spec.insecure)
    records = None if transcripts is None else out_dir
    if transcripts is not None:
        write_transcript_roster(out_dir / "roster.json", roster)
    secagg = server_secagg(spec, len(training))
    if (client_level is not None) != config.client_dp.enabled:
        raise ConfigError("client-level DP is on in the config iff client_level is given")
    security = Insecure() if pki is None else MutualTls(files=Deployment(root=pki).server_tls())
    server = AggregationServer(
        roster=roster,
        config=secagg,
        security=security,
        settings=ServerSettings(join_timeout=spec.join_timeout, stage_timeout=spec.stage_timeout),
        encoders=None if client_level is None else client_level.encoder,
        transcripts=transcripts,
    ).start()
    logs: list[ServerLog] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen(  # noqa: S603 (our interpreter, our module, our job file)
            [
                sys.executable,
                "-m",
                "fedmap_secure.transport.site_process",
                str(_job(root, site, server.port, spec, config, records)),
            ],
            env=env,
        )
        for site in training
    ]
    try:
        store = ServerStateStore(
            root / "server-state" / STATE_FILENAME, run_config_json=config_json(config)
        )
        final = serve_fedmap(
            server=server,
            config=config,
            n_features=len(dataset.feature_names),
            n_classes=dataset.n_classes,
            store=store,
            final_timeout=spec.join_timeout,
            on_round=lambda _state, log: logs.append(log),
            layout_check=None if client_level is None else client_level.check_layout,
        )
        for process in processes:
            if process.wait(timeout=spec.join_timeout) != 0:
                raise ConfigError(f"a site process exited with status {process.returncode}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        server.stop()
    results: dict[str, SiteResult] = {}
    reports: list[SiteReport] = []
    for site in training:
        results[site], site_reports = read_records(root / "sites" / f"{site}.json")
        reports += site_reports
    others = [s for s in dataset.sites if s.tier is not Tier.TRAIN]
    if others:
        job = {"site": None, "state_dir": str(root), "options": dict(spec.options)}
        trainer, score_release = load_factories({**job, "factories": spec.factories})
        final_opening = announcement(config_text=config_json(config), state=final, setup=None)
        for data in others:
            run = finish_offline(
                data=data,
                feature_names=dataset.feature_names,
                n_classes=dataset.n_classes,
                final=final_opening,
                trainer_factory=trainer,
                score_release_factory=score_release,
            )
            if run.result is not None:
                results[data.name] = run.result
            reports += run.reports
    return SimulationResult(
        method=config.method.value,
        dataset=dataset.name,
        rounds=config.rounds,
        seed=config.seed,
        sites=tuple(results[s.name] for s in dataset.sites),
        reports=tuple(sorted(reports, key=lambda r: (r.round_index, r.site))),
        server_logs=tuple(logs),
        final_state=final,
        n_theta=int(final.gamma.size),
        n_psi=0 if final.psi is None else int(final.psi.size),
        wall_seconds=time.perf_counter() - start,
    )


def describe_secure_aggregation(spec: GrpcSimulation, n_sites: int) -> dict[str, object]:
    """The ``summary.json['privacy']['secure_aggregation']`` entry of a grpc run."""
    c = server_secagg(spec, n_sites)
    return {
        "protocol": c.protocol_name,
        "transport": "grpc (plaintext, local)" if spec.insecure else "grpc (mutual TLS)",
        "n": c.n,
        "k": c.k,
        "t": c.t,
        "bits": c.bits,
        "dropout_fraction": c.dropout_fraction,
        "corrupt_fraction": c.corrupt_fraction,
    }


def simulate_grpc_to_dir(
    *,
    config: SimulationConfig,
    dataset: FederatedDataset,
    spec: GrpcSimulation,
    out_dir: Path,
    console: Console,
    differential_privacy: dict[str, Any] | None = None,
    collect_privacy: PrivacyCollector | None = None,
) -> dict[str, Any]:
    """``simulate --transport grpc``: run, write summary.json and metrics.csv, print the table.

    ``collect_privacy()``, called after the run, returns the ``differential_privacy``
    section and each private site's epsilon spent (from the sites' own ledgers).
    """
    n_train = len(dataset.by_tier(Tier.TRAIN))
    transcripts = fresh_chain(out_dir)
    client_level = None
    if config.client_dp.enabled:
        state = fresh_client_dp_state(out_dir)
        client_level = client_level_rounds(config, server_secagg(spec, n_train), state)
    try:
        result = simulate_over_grpc(
            config=config,
            dataset=dataset,
            spec=spec,
            out_dir=out_dir,
            client_level=client_level,
            transcripts=transcripts,
        )
        client_level_dp = None if client_level is None else client_level.describe()
    finally:
        if client_level is not None:
            client_level.ledger.close()
    epsilon: dict[str, float] | None = None
    if collect_privacy is not None:
        differential_privacy, epsilon = collect_privacy()
    privacy = {
        "secure_aggregation": {
            **describe_secure_aggregation(spec, n_train),
            "transcripts": describe_chain(transcripts, out_dir),
        },
        "differential_privacy": differential_privacy,
        "client_level_dp": client_level_dp,
        "metrics_released": False,
    }
    summary = summary_dict(result, privacy=privacy, epsilon_spent=epsilon)
    write_outputs(out_dir, result, summary)
    console.print(site_table(result, epsilon_spent=epsilon))
    console.print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'metrics.csv'}")
    return summary
