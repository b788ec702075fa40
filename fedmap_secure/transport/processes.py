"""``fedmap-secure server --config server.toml`` and ``fedmap-secure site --config site.toml``.

``run_server`` listens (mutual TLS; plaintext only with ``insecure = true`` in
the file *and* ``insecure=True``, the command's ``--insecure``), runs the remaining
FedMAP rounds from its SQLite state and publishes the final state; with the
run configuration's ``[client_dp]`` on, it charges its client-level ledger
(``<state_dir>/client-dp``) before each round opens.
``run_site`` connects outbound to the server, loads only its own CSV files,
trains and contributes each round through SecAgg+ (adding its client-level
noise share from its own ``[client_dp]`` table, if any), and writes its final
evaluation to ``<state_dir>/result.json``. Refusals raise ``FedMapError``.

Both record the SecAgg transcripts (SPEC §13): the server its chain in
``<state_dir>/transcripts`` (continued after a restart, from its verified head)
and the roster in ``<state_dir>/roster.json``; each site its own records in
``<state_dir>/site-records/<site>/``, and it refuses a server that records none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedmap_secure.config.loader import load_config
from fedmap_secure.data.csv_sites import load_csv_sites
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.pipeline import client_level_rounds
from fedmap_secure.secagg.config import Roster
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.store import SiteRecordWriter, resume_chain, write_roster
from fedmap_secure.transport.channels import open_channel
from fedmap_secure.transport.deploy_config import load_server_deployment, load_site_deployment
from fedmap_secure.transport.fedmap_server import serve_fedmap
from fedmap_secure.transport.fedmap_site import run_fedmap_site
from fedmap_secure.transport.fedmap_wire import config_json
from fedmap_secure.transport.pki import load_identity
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.server import AggregationServer
from fedmap_secure.transport.site import SiteClient
from fedmap_secure.transport.site_process import Factories, plain_factories
from fedmap_secure.transport.site_records import write_records
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore

log = logging.getLogger(__name__)
CLIENT_DP_STATE = "client-dp"
"""The server's client-level ledger, inside its ``state_dir`` (resumed on restart)."""
FactoryBuilder = Callable[[Mapping[str, Any]], Factories]


def _require_flag(path: Path, security: MutualTls | Insecure, insecure: bool) -> None:
    """Plaintext needs both ``insecure = true`` in the file and ``--insecure`` on the command."""
    if isinstance(security, Insecure) and not insecure:
        raise ConfigError(f"{path} asks for plaintext gRPC: pass --insecure to confirm")
    if isinstance(security, MutualTls) and insecure:
        raise ConfigError(f"--insecure given but {path} configures TLS; set insecure = true")


def run_server(path: Path, *, insecure: bool = False) -> None:
    """Serve the FedMAP run described by ``server.toml`` until the final state is published."""
    deployment = load_server_deployment(path)
    _require_flag(path, deployment.security, insecure)
    config = load_config(deployment.run_config)
    store = ServerStateStore(
        deployment.state_dir / STATE_FILENAME, run_config_json=config_json(config)
    )
    secagg = deployment.consortium.secagg
    transcripts = _server_transcripts(deployment.state_dir, deployment.consortium.roster, store)
    client_level = None
    if config.client_dp.enabled:
        state = deployment.state_dir / CLIENT_DP_STATE
        client_level = client_level_rounds(config, secagg, state)
        log.info("client-level DP on; server ledger %s", state)
    try:
        server = AggregationServer(
            roster=deployment.consortium.roster,
            config=secagg,
            security=deployment.security,
            address=deployment.listen,
            settings=deployment.settings,
            encoders=None if client_level is None else client_level.encoder,
            transcripts=transcripts,
        ).start()
        log.info("listening on %s (port %d)", deployment.listen, server.port)
        try:
            serve_fedmap(
                server=server,
                config=config,
                n_features=deployment.features,
                n_classes=deployment.classes,
                store=store,
                final_timeout=deployment.settings.join_timeout,
                layout_check=None if client_level is None else client_level.check_layout,
            )
        finally:
            server.stop()
    finally:
        if client_level is not None:
            client_level.ledger.close()


def _server_transcripts(
    state_dir: Path, roster: Roster, store: ServerStateStore
) -> TranscriptChain:
    """The server's transcript chain under ``state_dir``, continued after a restart.

    ``resume_chain`` refuses a directory whose rounds do not verify or do not end
    at ``HEAD``; a chain whose head is at or after the round the stored state
    resumes at (the server stopped between recording a round and saving it) is
    refused too, rather than recording that round a second time.
    """
    chain = resume_chain(state_dir, roster)
    write_roster(state_dir / "roster.json", roster)
    stored = store.latest()
    next_round = 0 if stored is None else stored.next_round
    if chain.head is not None and chain.head.round_index >= next_round:
        raise ConfigError(
            f"{state_dir / 'transcripts'}: the chain head is round {chain.head.round_index} "
            f"but the stored state resumes at round {next_round}; the transcripts and the "
            "server state disagree"
        )
    log.info(
        "transcripts: %s (previous hash %s)", state_dir / "transcripts", chain.previous_hash.hex()
    )
    return chain


def run_site(
    path: Path, *, insecure: bool = False, factories: FactoryBuilder = plain_factories
) -> None:
    """Take part in the run as the site described by ``site.toml``.

    ``factories`` builds the site's (trainer, score release) from
    ``{"site", "state_dir", "options"}``: the seam where DP-SGD and the DP score
    release (with the site's ledger in its state folder) are chosen.
    """
    deployment = load_site_deployment(path)
    _require_flag(path, deployment.security, insecure)
    if deployment.data is None:
        raise ConfigError(f"{path}: site.data (the site's CSV folder) is required")
    dataset = load_csv_sites(deployment.data, label_column=deployment.label_column)
    mine = [s for s in dataset.sites if s.name == deployment.site_id]
    if len(mine) != 1:
        raise ConfigError(f"{deployment.data}: no {deployment.site_id}_train/test.csv files")
    channel = open_channel(deployment.server, deployment.security)
    client = SiteClient(
        channel=channel,
        site_id=deployment.site_id,
        identity=load_identity(deployment.identity),
        roster=deployment.consortium.roster,
        config=deployment.consortium.secagg,
        encoders=(
            None
            if deployment.client_dp is None
            else deployment.client_dp.encoders(deployment.consortium.secagg)
        ),
        site_records=SiteRecordWriter(deployment.state_dir),
    )
    job = {"site": deployment.site_id, "state_dir": str(deployment.state_dir), "options": {}}
    trainer, score_release = factories(job)
    try:
        run = run_fedmap_site(
            client=client,
            data=mine[0],
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            trainer_factory=trainer,
            score_release_factory=score_release,
        )
    finally:
        channel.close()
    if run.result is None:
        raise ConfigError(f"site {deployment.site_id}: the run ended without a final state")
    deployment.state_dir.mkdir(parents=True, exist_ok=True)
    write_records(deployment.state_dir / "result.json", run.result, run.reports)
