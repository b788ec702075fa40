"""``fedmap-secure server --config server.toml`` and ``fedmap-secure site --config site.toml``.

``run_server`` listens (mutual TLS; plaintext only with ``insecure = true`` in
the file *and* ``insecure=True``, the command's ``--insecure``), runs the remaining
FedMAP rounds from its SQLite state, publishes the final state and, with
``server.schema`` set, writes the final global model to
``<state_dir>/models/global.pt`` + ``.json`` (the schema also binds the run's
``[features]`` contract, which every site checks; a run config whose declared
``[features]`` differ from the schema is refused with one line); with the
run configuration's ``[client_dp]`` on, it charges its client-level ledger
(``<state_dir>/client-dp``) before each round opens.
``run_site`` connects outbound to the server, loads only its own CSV files
and runs the site's ``runtime.SiteRuntime`` under its own ``[privacy]`` policy
(DP on unless its file says ``enabled = false``; its ledger in ``<state_dir>``,
continued across runs): it refuses a run weaker than its policy, charges its
ledger before every release, contributes through SecAgg+ (adding its
client-level noise share from its own ``[client_dp]`` table, if any), and
writes its final evaluation to ``<state_dir>/result.json`` and its privacy
summary to ``<state_dir>/dp.json``. A late site (``tier = "finetune"`` or
``"unseen"`` in its site.toml, on the consortium's ``late_sites``) takes part
in no secure round: it fetches the final state over the same channel
(``late_site.fetch_final``) and hands it to the same ``SiteRuntime``, which
fine-tunes under the site's own policy (charged to its ledger before the
personalised model is written) or evaluates the global model; it sends the
server nothing else. Refusals raise ``FedMapError``.

Both record the SecAgg transcripts (SPEC §13): the server its chain in
``<state_dir>/transcripts`` (continued after a restart, from its verified head)
and the roster in ``<state_dir>/roster.json``; each site its own records in
``<state_dir>/site-records/<site>/``, and it refuses a server that records none.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import grpc

from fedmap_secure.config.loader import load_config
from fedmap_secure.data.contract import bind_config
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.runtime.announcement import config_json
from fedmap_secure.runtime.client_level import client_level_rounds
from fedmap_secure.runtime.privacy import SitePolicy
from fedmap_secure.runtime.results import TrainerFactory
from fedmap_secure.runtime.server import ServerRuntime
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.secagg.config import Roster
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.store import SiteRecordWriter, resume_chain, write_roster
from fedmap_secure.transport.channels import open_channel
from fedmap_secure.transport.deploy_config import (
    SiteDeployment,
    load_server_deployment,
    load_site_deployment,
)
from fedmap_secure.transport.exclusion import AbortJournal, ExclusionPolicy
from fedmap_secure.transport.late_site import fetch_final
from fedmap_secure.transport.pki import load_identity
from fedmap_secure.transport.round_floor import RoundFloor
from fedmap_secure.transport.security import Insecure, MutualTls
from fedmap_secure.transport.server import AggregationServer
from fedmap_secure.transport.server_channel import GrpcServerChannel
from fedmap_secure.transport.site import SiteClient
from fedmap_secure.transport.site_driver import drive_site
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore

log = logging.getLogger(__name__)
MODELS_DIR = "models"
"""The server's final global model, inside its ``state_dir`` (``models/global.pt`` + ``.json``)."""
CLIENT_DP_STATE = "client-dp"
"""The server's client-level ledger, inside its ``state_dir`` (resumed on restart)."""


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
    if deployment.model is not None:  # the run's custom model, allowed by the operator
        from fedmap_secure.fedmap.models import allow_importable_factory

        allow_importable_factory(deployment.model)
    config = load_config(deployment.run_config)
    if deployment.schema is not None:  # the contract every site checks; refused on a mismatch
        config = bind_config(config, deployment.schema, source=f"{path}: server.schema")
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
            exclusion=ExclusionPolicy(
                exclude_rounds=deployment.settings.exclude_rounds,
                journal=AbortJournal(deployment.state_dir / "transcripts" / "aborted.jsonl"),
            ),
            late_sites=deployment.consortium.late_sites,
        ).start()
        log.info("listening on %s (port %d)", deployment.listen, server.port)
        try:
            ServerRuntime(
                config=config,
                n_features=deployment.features,
                n_classes=deployment.classes,
                channel=GrpcServerChannel(server, final_timeout=deployment.settings.join_timeout),
                sites=deployment.consortium.roster.sites,
                store=store,
                layout_check=None if client_level is None else client_level.check_layout,
                # without server.schema the global model file is skipped (logged)
                model_path=deployment.state_dir / MODELS_DIR,
                schema=deployment.schema,
            ).run()
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
    path: Path, *, insecure: bool = False, plain_trainer: TrainerFactory | None = None
) -> None:
    """Take part in the run as the site described by ``site.toml`` (see the module docstring).

    ``plain_trainer`` (tests): the non-private trainer, used only when the site's
    own policy and the run both have DP off.
    """
    deployment = load_site_deployment(path)
    _require_flag(path, deployment.security, insecure)
    if deployment.model is not None:  # the custom model this site's operator allows
        from fedmap_secure.fedmap.models import allow_importable_factory

        allow_importable_factory(deployment.model)
    dataset = _own_data(path, deployment)
    (mine,) = dataset.sites
    runtime = SiteRuntime(
        SiteSetup(
            data=mine,
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            schema=dataset.schema,
            policy=SitePolicy(privacy=deployment.privacy, source=f"{path} [privacy]"),
            state_dir=deployment.state_dir,
            plain_trainer=plain_trainer,
            run_label=f"site {deployment.site_id}",
        )
    )
    own = deployment.privacy
    log.info(
        "site %s (%s tier): state %s; privacy policy: %s",
        deployment.site_id,
        deployment.tier.value,
        deployment.state_dir,
        (
            f"DP on, budget epsilon {own.epsilon:g}, delta {own.delta:g}"
            if own.enabled
            else "DP OFF (enabled = false in the site's own file)"
        ),
    )
    channel = open_channel(deployment.server, deployment.security)
    try:
        if deployment.tier is Tier.TRAIN:
            drive_site(client=_site_client(channel, deployment), handler=runtime)
        else:  # a late site: the final state over the same channel, then its own work
            final = fetch_final(channel, site_id=deployment.site_id)
            log.info(
                "site %s: final state of round %d fetched", deployment.site_id, final.round_index
            )
            runtime.handle(final)
    finally:
        runtime.close()
        channel.close()
    if runtime.result is None:
        raise ConfigError(f"site {deployment.site_id}: the run ended without a final state")


def _site_client(channel: grpc.Channel, deployment: SiteDeployment) -> SiteClient:
    """A training site's SecAgg+ client: its identity key, roster, records and round floor."""
    records = deployment.site_records or deployment.state_dir
    if deployment.identity is None:
        raise ConfigError(f"site {deployment.site_id}: a training site needs site.identity")
    return SiteClient(
        channel=channel,
        site_id=deployment.site_id,
        identity=load_identity(deployment.identity),
        roster=deployment.consortium.roster,
        config=deployment.consortium.secagg,
        encoders=(
            None
            if deployment.client_dp is None
            else deployment.client_dp.encoders(
                deployment.consortium.secagg,
                deployment.client_dp.open_guard(deployment.state_dir, deployment.site_id),
            )
        ),
        site_records=SiteRecordWriter(records),
        # the floor lives with the records it protects: a new records folder is a new run
        round_floor=RoundFloor(records / "site-records" / deployment.site_id),
    )


def _own_data(path: Path, deployment: SiteDeployment) -> FederatedDataset:
    """Only this site's data: its CSV folder, or its part of a bundled dataset (simulations)."""
    if deployment.data is not None:
        from fedmap_secure.data.csv_sites import load_csv_sites

        dataset = load_csv_sites(deployment.data, label_column=deployment.label_column)
        where = f"{deployment.data}: no {deployment.site_id}_train/test.csv files"
    elif deployment.dataset is not None:
        from fedmap_secure._api.arrays import ARRAYS_PREFIX, load_arrays
        from fedmap_secure.data import load_dataset

        spec = deployment.dataset
        label = deployment.label_column if spec.startswith("csv:") else None
        dataset = (
            load_arrays(spec)  # the sites of a Python API run (fedmap_secure.simulate)
            if spec.startswith(ARRAYS_PREFIX)
            else load_dataset(spec, label_column=label, seed=deployment.dataset_seed)
        )
        where = f"{path}: site {deployment.site_id!r} is not in dataset {deployment.dataset!r}"
    else:
        raise ConfigError(f"{path}: site.data (the site's CSV folder) is required")
    mine = tuple(
        dataclasses.replace(s, tier=deployment.tier)  # the tier is the site's own file's
        for s in dataset.sites
        if s.name == deployment.site_id
    )
    if len(mine) != 1:
        raise ConfigError(where)
    return dataclasses.replace(dataset, sites=mine)
