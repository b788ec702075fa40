"""``simulate --transport grpc``: the server here, one ``fedmap-secure site`` process per site.

The driver creates a throwaway consortium in ``out_dir/grpc`` (test CA and
certificates, site identity keys, roster; plaintext only when ``insecure``),
starts the ``AggregationServer`` and the ``runtime.ServerRuntime`` in this
process, and for each training-tier site writes a ``site.toml``
(``OUT/grpc/sites/<site>/site.toml``: the site's dataset spec and seed, its
state folder, its ``[privacy]`` policy = the run's privacy for that site, its
pinned ``[client_dp]``, its TLS files) and launches
``python -m fedmap_secure.cli site --config site.toml``: the very command a
deployed site runs, so the simulated site and the deployed site are one code
path (``runtime.SiteRuntime``). Each site process keeps only its own data,
charges its own ledger in its state folder (``OUT/sites/<site>``, or
``SITE_STATE/<site>`` kept across runs), logs to
``OUT/grpc/sites/<site>/site.log`` and writes ``result.json`` (its final and
per-round metrics, evaluated locally) and ``dp.json`` (its privacy summary);
the driver reads these files afterwards, nothing of them crosses the wire.
Like an in-process run, the server records each round's transcript
(``OUT/transcripts``, roster ``OUT/roster.json``) and every site its own
records (``OUT/site-records/<site>``).

Fine-tune and unseen tiers take no part in secure rounds: each is a late site
process too (``tier`` in its site.toml, on the consortium's ``late_sites``, a
TLS certificate but no identity key), which fetches the final state from the
server over the same mutual-TLS channel (``FetchFinal``) and runs the same
``runtime.SiteRuntime.finish`` as in process: the fine-tune tier fine-tunes
under its own ``[privacy]`` (its ledger in its state folder), the unseen tier
evaluates the global model; each writes ``result.json`` (and its model file
and ``dp.json``), nothing goes back to the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.client_dp.rounds import ClientLevelRounds
from fedmap_secure.config.loader import config_to_dict
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.pipeline import (
    MODELS_DIR,
    budget_scope,
    describe_chain,
    fresh_client_dp_state,
    site_state_dirs,
)
from fedmap_secure.experiments.report import site_table, summary_dict, write_outputs
from fedmap_secure.fedmap.methods import GlobalState
from fedmap_secure.fedmap.site import SiteReport
from fedmap_secure.runtime.announcement import config_json
from fedmap_secure.runtime.client_level import client_level_rounds
from fedmap_secure.runtime.privacy import simulated_policy
from fedmap_secure.runtime.records import read_records
from fedmap_secure.runtime.results import ProgressFn, SimulationResult, SiteResult
from fedmap_secure.runtime.server import ServerRuntime
from fedmap_secure.runtime.site import DP_FILE, MODEL_FILE, RESULT_FILE
from fedmap_secure.secagg.config import DEFAULT_BITS, Roster, SecAggConfig
from fedmap_secure.secagg.round_encoder import RoundEncoder
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.store import fresh_chain
from fedmap_secure.transcript.store import write_roster as write_transcript_roster
from fedmap_secure.transport.client_dp_pin import pinned_client_dp
from fedmap_secure.transport.deploy_config import toml_text
from fedmap_secure.transport.pki import (
    Deployment,
    create_identity,
    generate_deployment,
    load_roster,
    write_roster,
)
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.server_channel import GrpcServerChannel
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class GrpcSimulation:
    """How to run the sites: dataset spec (as for ``simulate``) and the threat model."""

    dataset_spec: str
    label_column: str | None = None
    dropout_fraction: float = 0.25
    corrupt_fraction: float = 0.0
    max_colluding_sites: int | None = None
    insecure: bool = False
    bits: int = DEFAULT_BITS
    join_timeout: float = 600.0
    stage_timeout: float = 60.0
    site_state: Path | None = None
    """One state folder per site under it, kept across runs (default: fresh OUT/sites/<site>)."""
    model_factory: str | None = None
    """``module:function`` of a custom model (``[model] kind = "custom"``): each site's
    site.toml allows it (``[site] model``)."""


def grpc_spec(args: argparse.Namespace, **overrides: Any) -> GrpcSimulation:
    """The grpc simulation of ``simulate`` arguments (dataset spec, label column, TLS)."""
    return GrpcSimulation(
        dataset_spec=args.dataset,
        label_column=getattr(args, "label_column", None),
        insecure=bool(getattr(args, "insecure", False)),
        site_state=getattr(args, "site_state", None),
        **overrides,
    )


def _consortium(
    root: Path, sites: list[str], late: list[str], insecure: bool
) -> tuple[Roster, Path | None]:
    if not insecure:
        deployment = generate_deployment(root / "pki", sites, late_sites=late)
        return load_roster(deployment.roster), root / "pki"
    keys = {s: create_identity(root / "pki" / "sites" / s / "identity.pem").public for s in sites}
    roster = Roster.from_mapping(keys)
    write_roster(root / "pki" / "roster.json", roster)
    return roster, None


def site_toml(
    *,
    root: Path,
    site: str,
    port: int,
    spec: GrpcSimulation,
    config: SimulationConfig,
    state_dir: Path,
    records: Path | None,
    tier: Tier = Tier.TRAIN,
    late: Sequence[str] = (),
) -> Path:
    """Write the site's ``site.toml`` (what a deployed site would hold) and return its path.

    Every path in it is absolute (a site.toml resolves relative paths against itself).
    A late site (``tier`` finetune / unseen) has no identity key, records or
    ``[client_dp]``; ``late`` is the consortium's late roster.
    """
    training = tier is Tier.TRAIN
    root, state_dir = root.resolve(), state_dir.resolve()
    records = None if records is None else records.resolve()
    pki = root / "pki"
    privacy = config_to_dict(simulated_policy(config.privacy, site, "").privacy)
    privacy.pop("site", None)
    tables: dict[str, dict[str, Any]] = {
        "site": {
            "id": site,
            "server": f"127.0.0.1:{port}",
            "identity": str(pki / "sites" / site / "identity.pem") if training else None,
            "tier": tier.value,
            "state_dir": str(state_dir),
            "dataset": spec.dataset_spec,
            "dataset_seed": config.seed,
            "label_column": spec.label_column,
            "site_records": None if records is None or not training else str(records),
            "insecure": spec.insecure,
            "model": spec.model_factory,
        },
    }
    if not spec.insecure:
        tls = Deployment(root=pki).site_tls(site)
        tables["tls"] = {
            "ca": str(tls.ca),
            "certificate": str(tls.certificate),
            "private_key": str(tls.private_key),
        }
    tables["consortium"] = {
        "roster": str(pki / "roster.json"),
        "dropout_fraction": spec.dropout_fraction,
        "corrupt_fraction": spec.corrupt_fraction,
        "bits": spec.bits,
    }
    if spec.max_colluding_sites is not None:
        tables["consortium"]["max_colluding_sites"] = spec.max_colluding_sites
    if late:
        tables["consortium"]["late_sites"] = list(late)
    tables["privacy"] = privacy
    pinned = pinned_client_dp(config)
    if pinned is not None and training:
        tables["client_dp"] = pinned
    path = root / "sites" / site / "site.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(tables), encoding="utf-8")
    return path


def server_secagg(spec: GrpcSimulation, n_sites: int) -> SecAggConfig:
    """The SecAgg parameters of a grpc run (every site process derives the same)."""
    return SecAggConfig.for_threat_model(
        n=n_sites,
        dropout_fraction=spec.dropout_fraction,
        corrupt_fraction=spec.corrupt_fraction,
        bits=spec.bits,
        max_colluding_sites=spec.max_colluding_sites,
    )


def _launch(path: Path, insecure: bool) -> subprocess.Popen[bytes]:
    """``python -m fedmap_secure.cli site --config site.toml``, logging beside its site.toml."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "fedmap_secure.cli", "site", "--config", str(path)]
    if insecure:
        command.append("--insecure")
    with (path.parent / "site.log").open("wb") as sink:
        return subprocess.Popen(  # noqa: S603 (our interpreter, our module, our file)
            command,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            # Own process group: a Ctrl-C at the terminal reaches only this process, which
            # stops the sites itself (one "interrupted" line, nothing from each site).
            process_group=0,
        )


def _stop(processes: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """Terminate the site processes still running (SIGTERM, then SIGKILL after ``grace`` s)."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _site_error(path: Path) -> str:
    """The last line of a failed site's log (its one-line refusal)."""
    log_file = path.parent / "site.log"
    lines = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


_T = TypeVar("_T")


class _ClientLevel:
    """Client-level DP rounds opened, used and closed in the server runtime's thread."""

    def __init__(self, config: SimulationConfig, secagg: SecAggConfig, state: Path) -> None:
        self._config, self._secagg, self._state = config, secagg, state
        self.rounds: ClientLevelRounds | None = None

    def _open(self) -> ClientLevelRounds:
        if self.rounds is None:
            self.rounds = client_level_rounds(self._config, self._secagg, self._state)
        return self.rounds

    def encoder(self, round_index: int, layout: VectorLayout, context: bytes) -> RoundEncoder:
        return self._open().encoder(round_index, layout, context)

    def check_layout(self, layout: VectorLayout) -> None:
        self._open().check_layout(layout)

    def finish(self) -> dict[str, Any]:
        rounds = self._open()
        try:
            return rounds.describe()
        finally:
            rounds.ledger.close()


class _Watchdog:
    """Runs the server runtime while watching the site processes: a site process that
    fails ends the run with that site's error instead of a wait for the join timeout."""

    def __init__(self, processes: dict[str, subprocess.Popen[bytes]], tomls: dict[str, Path]):
        self._processes, self._tomls = processes, tomls

    def run(self, serve_run: Callable[[], _T]) -> _T:
        """``serve_run()`` in a worker thread (everything it opens, e.g. a SQLite ledger, is
        used in that thread only) while this thread watches the site processes."""
        outcome: list[_T | BaseException] = []

        def serve() -> None:
            try:
                outcome.append(serve_run())
            except BaseException as exc:  # handed to the calling thread
                outcome.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            self._check()
        (result,) = outcome
        if isinstance(result, BaseException):
            deadline = time.monotonic() + 10.0  # a refusing site's exit explains the failure
            while time.monotonic() < deadline and any(
                p.poll() is None for p in self._processes.values()
            ):
                self._check()
                time.sleep(0.2)
            self._check()
            for site, path in self._tomls.items():  # a site that refused but has not exited yet
                last = _site_error(path)
                if last.startswith("fedmap-secure: error:"):
                    raise ConfigError(f"site process {site} failed: {last}") from result
            raise result
        return result

    def _check(self) -> None:
        for site, process in self._processes.items():
            code = process.poll()
            if code is not None and code != 0:
                raise ConfigError(
                    f"site process {site} exited with status {code}: "
                    f"{_site_error(self._tomls[site])}"
                )


def simulate_over_grpc(
    *,
    config: SimulationConfig,
    dataset: FederatedDataset,
    spec: GrpcSimulation,
    out_dir: Path,
    transcripts: TranscriptChain | None = None,
    progress: ProgressFn | None = None,
) -> tuple[SimulationResult, dict[str, Path], dict[str, Any] | None]:
    """Run ``config`` with the server here and one site process per site (the fine-tune
    and unseen tiers as late sites that fetch the final state).

    Returns the result, each site's state folder (ledger, dp.json, result.json) and the
    ``client_level_dp`` summary. With ``[client_dp]`` on, the server charges its
    client-level ledger (``out_dir``/server/client-dp, fresh) before each round
    opens; each site process plans the same noise from its pinned ``[client_dp]``.
    ``transcripts``: the server records each round into it, ``out_dir``/roster.json
    is written and each site process writes its own records to
    ``out_dir``/site-records/<site>/.
    """
    start = time.perf_counter()
    root = out_dir / "grpc"
    training = [s.name for s in dataset.by_tier(Tier.TRAIN)]
    if len(training) < 2:
        raise ConfigError("secure aggregation over gRPC needs at least 2 training sites")
    late = [s.name for s in dataset.sites if s.tier is not Tier.TRAIN]
    tiers = {s.name: s.tier for s in dataset.sites}
    state_dirs = site_state_dirs(config, dataset, out_dir, spec.site_state)
    states = {s.name: state_dirs.get(s.name, out_dir / "sites" / s.name) for s in dataset.sites}
    secagg = server_secagg(spec, len(training))
    client_level = None
    if config.client_dp.enabled:
        client_level = _ClientLevel(config, secagg, fresh_client_dp_state(out_dir))
    roster, pki = _consortium(root, training, late, spec.insecure)
    records = None if transcripts is None else out_dir
    if transcripts is not None:
        write_transcript_roster(out_dir / "roster.json", roster)
    security = Insecure() if pki is None else MutualTls(files=Deployment(root=pki).server_tls())
    server = AggregationServer(
        roster=roster,
        config=secagg,
        security=security,
        settings=ServerSettings(
            join_timeout=spec.join_timeout,
            stage_timeout=spec.stage_timeout,
            late_timeout=spec.join_timeout,
        ),
        encoders=None if client_level is None else client_level.encoder,
        transcripts=transcripts,
        late_sites=frozenset(late),
    ).start()
    tomls = {
        site: site_toml(
            root=root,
            site=site,
            port=server.port,
            spec=spec,
            config=config,
            state_dir=states[site],
            records=records,
            tier=tiers[site],
            late=late,
        )
        for site in (*training, *late)
    }
    processes = {site: _launch(path, spec.insecure) for site, path in tomls.items()}
    runtime = ServerRuntime(
        config=config,
        n_features=len(dataset.feature_names),
        n_classes=dataset.n_classes,
        channel=GrpcServerChannel(server, final_timeout=spec.join_timeout),
        sites=training,
        store=ServerStateStore(
            root / "server-state" / STATE_FILENAME, run_config_json=config_json(config)
        ),
        layout_check=None if client_level is None else client_level.check_layout,
        progress=progress,
        model_path=out_dir / MODELS_DIR,
        schema=dataset.schema,
    )

    def serve() -> tuple[GlobalState, dict[str, Any] | None]:
        try:
            final = runtime.run()
        finally:
            client_level_dp = None if client_level is None else client_level.finish()
        return final, client_level_dp

    try:
        final, client_level_dp = _Watchdog(processes, tomls).run(serve)
        for site, process in processes.items():
            if process.wait(timeout=spec.join_timeout) != 0:
                raise ConfigError(
                    f"site process {site} exited with status {process.returncode}: "
                    f"{_site_error(tomls[site])}"
                )
    finally:
        _stop(list(processes.values()))
        server.stop()
    results: dict[str, SiteResult] = {}
    reports: list[SiteReport] = []
    models: dict[str, Path] = {}
    for site in (*training, *late):  # every site process wrote its own records
        results[site], site_reports = read_records(states[site] / RESULT_FILE)
        reports += site_reports
        if (states[site] / MODEL_FILE).is_file():  # written by the site process
            models[site] = states[site] / MODEL_FILE
    if runtime.model_file is not None:
        models["global"] = runtime.model_file
    result = SimulationResult(
        method=config.method.value,
        dataset=dataset.name,
        rounds=config.rounds,
        seed=config.seed,
        sites=tuple(results[s.name] for s in dataset.sites),
        reports=tuple(sorted(reports, key=lambda r: (r.round_index, r.site))),
        server_logs=tuple(runtime.logs),
        final_state=final,
        n_theta=int(final.gamma.size),
        n_psi=0 if final.psi is None else int(final.psi.size),
        wall_seconds=time.perf_counter() - start,
        model_files=models,
    )
    return result, states, client_level_dp


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
        "max_colluding_sites": c.c_max,
        "quorum": c.quorum,
    }


def collect_differential_privacy(
    states: dict[str, Path], sites: Sequence[str]
) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
    """Merge the sites' dp.json into one ``differential_privacy`` section and epsilon map."""
    merged: dict[str, Any] | None = None
    spent: dict[str, float] = {}
    for site in sites:
        path = states[site] / DP_FILE
        if not path.is_file():
            continue
        part = json.loads(path.read_text(encoding="utf-8"))
        if merged is None:
            merged = {**part, "sites": {}}
        for name, entry in part["sites"].items():
            merged["sites"][name] = {**entry, "ledger": str(states[site])}
            spent[name] = float(entry["epsilon_spent"])
    return merged, (spent if merged is not None else None)


def simulate_grpc_to_dir(
    *,
    config: SimulationConfig,
    dataset: FederatedDataset,
    spec: GrpcSimulation,
    out_dir: Path,
    console: Console,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """``simulate --transport grpc``: run, write summary.json and metrics.csv, print the table."""
    training = [s.name for s in dataset.by_tier(Tier.TRAIN)]
    transcripts = fresh_chain(out_dir)
    result, states, client_level_dp = simulate_over_grpc(
        config=config,
        dataset=dataset,
        spec=spec,
        out_dir=out_dir,
        transcripts=transcripts,
        progress=progress,
    )
    differential_privacy, epsilon = collect_differential_privacy(
        states, [s.name for s in dataset.sites]
    )
    if differential_privacy is not None:
        differential_privacy["budget_scope"] = budget_scope(out_dir, spec.site_state)
    privacy = {
        "secure_aggregation": {
            **describe_secure_aggregation(spec, len(training)),
            "transcripts": describe_chain(transcripts, out_dir),
        },
        "differential_privacy": differential_privacy,
        "client_level_dp": client_level_dp,
        "metrics_released": False,
    }
    summary = summary_dict(
        result, privacy=privacy, epsilon_spent=epsilon, n_classes=dataset.n_classes
    )
    write_outputs(out_dir, result, summary)
    console.print(site_table(result, epsilon_spent=epsilon))
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning: {warning}")
    if differential_privacy is not None:
        console.print(f"DP budget: {differential_privacy['budget_scope']}")
    console.print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'metrics.csv'}")
    return summary
