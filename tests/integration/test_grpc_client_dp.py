"""Client-level DP over real gRPC: the server charges its ledger, sites plan the same noise
from their own pinned settings, and a site with other settings cannot join the round."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import socket
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fedmap_secure.aggregation import AggregateResult, Field, VectorLayout
from fedmap_secure.cli import main
from fedmap_secure.client_dp.rounds import ClientDpPlanner, ClientLevelRounds
from fedmap_secure.config.loader import load_config
from fedmap_secure.config.privacy import ClientDpSettings
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.schema_file import schema_toml_text
from fedmap_secure.errors import BudgetExceededError, ConfigError
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.privacy.ledger_store import ledger_path, load_report
from fedmap_secure.runtime.announcement import config_json
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.transport.client_dp_pin import PinnedClientDp
from fedmap_secure.transport.deploy_config import load_site_deployment
from fedmap_secure.transport.keygen import keygen_consortium
from fedmap_secure.transport.processes import CLIENT_DP_STATE
from fedmap_secure.transport.server import AggregationServer
from fedmap_secure.transport.site import SiteOutcome, SiteReport
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore
from tests.cli_runner import TINY_SECAGG
from tests.integration.grpc_harness import (
    CONTEXT,
    FAST,
    SITES,
    Consortium,
    harness_client,
    open_channel,
    plain_consortium,
    run_deployment_threads,
)
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401

LAYOUT = VectorLayout(
    (Field(name="update", length=300, bound=1.0), Field(name="grad", length=200, bound=2.0))
)
SECAGG = SecAggConfig.for_threat_model(n=4, dropout_fraction=0.25, corrupt_fraction=0.0, bits=64)
SETTINGS = ClientDpSettings(enabled=True, epsilon=4.0, delta=1e-3)


def _server_rounds(settings: ClientDpSettings = SETTINGS, planned: int = 2) -> ClientLevelRounds:
    ledger = PrivacyLedger(
        MemoryLedgerStore(),
        Budget(epsilon=settings.epsilon, delta=settings.delta),
        DpAccountingRdpAccountant(),
    )
    rounds = ClientLevelRounds(settings, rounds=planned, secagg=SECAGG, ledger=ledger)
    rounds.check_layout(LAYOUT)
    return rounds


def _inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for site in SITES:
        update, grad = rng.normal(0, 1, 300), rng.normal(0, 1, 200)
        out[site] = np.concatenate(
            [0.8 * update / np.linalg.norm(update), 1.5 * grad / np.linalg.norm(grad)]
        )
    return out


@contextmanager
def _server(consortium: Consortium, rounds: ClientLevelRounds) -> Iterator[AggregationServer]:
    """A server whose round encoders are ``rounds.encoder`` (charges its ledger first)."""
    server = AggregationServer(
        roster=consortium.roster,
        config=SECAGG,
        security=consortium.security(),
        settings=FAST,
        encoders=rounds.encoder,
    ).start()
    try:
        yield server
    finally:
        server.stop(grace=0.5)


def _run_round(
    server: AggregationServer,
    consortium: Consortium,
    inputs: dict[str, np.ndarray],
    pins: dict[str, PinnedClientDp | None],
) -> tuple[AggregateResult, dict[str, SiteReport]]:
    """One round: every site in its own thread with its own pinned encoders."""
    reports: dict[str, SiteReport] = {}

    def site_main(site: str) -> None:
        channel = open_channel(server.port, consortium.security(site))
        pinned = pins[site]
        client = harness_client(
            consortium,
            site,
            channel,
            config=SECAGG,
            encoders=None if pinned is None else pinned.encoders(SECAGG),
        )
        try:
            reports[site] = client.run_round(lambda _opening: inputs[site])
        finally:
            channel.close()

    threads = [threading.Thread(target=site_main, args=(s,), daemon=True) for s in inputs]
    for t in threads:
        t.start()
    try:
        result = server.run_round(round_index=0, layout=LAYOUT, context=CONTEXT)
    finally:
        for t in threads:
            t.join(timeout=30)
    return result, reports


def test_one_grpc_round_decodes_to_the_true_sum_plus_calibrated_noise() -> None:
    consortium = plain_consortium()
    rounds = _server_rounds()
    pinned = PinnedClientDp(settings=SETTINGS, rounds=2)
    inputs = _inputs(np.random.default_rng(3))
    with _server(consortium, rounds) as server:
        result, reports = _run_round(server, consortium, inputs, dict.fromkeys(SITES, pinned))
    assert all(r.outcome is SiteOutcome.COMPLETED for r in reports.values())
    assert result.contributors == frozenset(SITES)
    assert [e.round_index for e in rounds.ledger.history()] == [0]
    truth = np.sum(list(inputs.values()), axis=0)
    error = np.concatenate([result.sums["update"], result.sums["grad"]]) - truth
    plan = rounds.plan()
    expected_var = len(SITES) * (plan.problem.local_noise_std * plan.scale) ** 2
    # 500 coordinates: the sample variance's relative standard error is sqrt(2/500) ~ 0.06
    assert np.var(error) == pytest.approx(expected_var, rel=0.3)
    assert abs(np.mean(error)) < 5 * math.sqrt(expected_var / error.size)
    # the in-process aggregator with the same plan gives the same distribution
    reference = SecureAggregator(
        identities=consortium.identities, config=SECAGG, encoders=_server_rounds().encoder
    ).aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=CONTEXT)
    in_process = np.concatenate([reference.sums["update"], reference.sums["grad"]]) - truth
    assert np.var(in_process) == pytest.approx(expected_var, rel=0.3)


@pytest.mark.parametrize(
    "odd",
    [
        PinnedClientDp(settings=dataclasses.replace(SETTINGS, epsilon=40.0), rounds=2),
        PinnedClientDp(settings=SETTINGS, rounds=1),
        None,  # expects no client-level DP at all
    ],
    ids=["other-epsilon", "other-rounds", "no-client-dp"],
)
def test_a_site_with_other_client_dp_settings_cannot_join(odd: PinnedClientDp | None) -> None:
    consortium = plain_consortium()
    rounds = _server_rounds()
    pins: dict[str, PinnedClientDp | None] = dict.fromkeys(
        SITES, PinnedClientDp(settings=SETTINGS, rounds=2)
    )
    pins[SITES[0]] = odd
    inputs = _inputs(np.random.default_rng(4))
    with _server(consortium, rounds) as server:
        result, reports = _run_round(server, consortium, inputs, pins)
    assert reports[SITES[0]].outcome is SiteOutcome.FAILED
    assert "setup id differs" in reports[SITES[0]].detail
    assert result.contributors == frozenset(SITES[1:])
    assert len(rounds.ledger.history()) == 1


def test_the_server_refuses_a_round_over_budget_before_announcing_it() -> None:
    consortium = plain_consortium()
    rounds = _server_rounds(planned=1)
    with _server(consortium, rounds) as server:
        rounds.encoder(0, LAYOUT, CONTEXT)  # round 0 charged: the one planned round is spent
        with pytest.raises(BudgetExceededError):
            server.run_round(round_index=1, layout=LAYOUT, context=CONTEXT)
        assert server.open_round is None
    assert len(rounds.ledger.history()) == 1


def test_a_site_refuses_a_round_beyond_its_plan() -> None:
    planner = ClientDpPlanner(SETTINGS, rounds=2, secagg=SECAGG)
    planner.round_encoder(1, LAYOUT, CONTEXT)
    with pytest.raises(BudgetExceededError, match="outside the 2 planned"):
        planner.round_encoder(2, LAYOUT, CONTEXT)


def _write_csvs(root: Path, only: str | None = None) -> str:
    """``tiny``'s 3 training sites (or site ``only``) as a CSV folder."""
    dataset = tiny_dataset(seed=0, finetune=False, unseen=False)
    root.mkdir(parents=True)
    # the rows below are already scaled: their declared schema is the identity
    identity = FeatureSchema.identity(dataset.feature_names)
    (root / "schema.toml").write_text(schema_toml_text(identity))
    for site in dataset.sites:
        if only is not None and site.name != only:
            continue
        for split, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=dataset.feature_names)
            frame["label"] = y
            frame.to_csv(root / f"{site.name}_{split}.csv", index=False)
    return f"csv:{root}"


@pytest.mark.slow
def test_simulate_over_grpc_with_client_level_dp(tmp_path: Path) -> None:
    """The CLI run: server here, one process per site, 2 client-level rounds charged."""
    data = _write_csvs(tmp_path / "data")
    (tmp_path / "fast.toml").write_text("[training]\nepochs = 1\n" + TINY_SECAGG)
    out = tmp_path / "out"
    argv = ["simulate", "--dataset", data, "--label-column", "label", "--method", "fedmap"]
    argv += ["--transport", "grpc", "--insecure", "--rounds", "2", "--no-dp"]
    argv += ["--client-epsilon", "6", "--config", str(tmp_path / "fast.toml"), "--out", str(out)]
    buf = io.StringIO()
    assert main(argv, console=Console(file=buf, width=200)) == 0, buf.getvalue()
    summary = json.loads((out / "summary.json").read_text())
    client = summary["privacy"]["client_level_dp"]
    assert client["rounds_charged"] == 2
    assert 0 < client["epsilon_spent"] <= 6.0
    assert client["plan"]["mechanism"] == "ddg"
    assert summary["privacy"]["secure_aggregation"]["bits"] == 64
    assert summary["privacy"]["secure_aggregation"]["transport"] == "grpc (plaintext, local)"
    for site in summary["sites"]:  # each site process chose its solve on its own rows
        assert site["personalisation"]["source"] == "validation"
        assert site["personalisation"]["chosen"] in site["personalisation"]["validation_ba"]
    assert ledger_path(out / "server" / "client-dp").is_file()
    tomls = [tomllib.loads(p.read_text()) for p in (out / "grpc" / "sites").glob("*/site.toml")]
    assert len(tomls) == 3  # each site process runs `fedmap-secure site` with its own site.toml
    assert all(t["client_dp"]["epsilon"] == 6.0 and t["client_dp"]["rounds"] == 2 for t in tomls)
    assert all(t["privacy"]["enabled"] is False for t in tomls)
    buf = io.StringIO()
    show = ["ledger", "show", "--site-state", str(out / "server" / "client-dp"), "--json"]
    assert main(show, console=Console(file=buf, width=200)) == 0
    assert json.loads(buf.getvalue())["unit"] == "client"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _deployment(root: Path, site_client_dp: str) -> list[str]:
    """server.toml + one site.toml per tiny training site (plaintext, 127.0.0.1)."""
    dataset = tiny_dataset(seed=0, finetune=False, unseen=False)
    sites = [s.name for s in dataset.sites]
    for site in sites:
        _write_csvs(root / "data" / site, only=site)
    keygen_consortium(root / "pki", sites)
    port = _free_port()
    consortium = (
        '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.0\ncorrupt_fraction = 0.0\n'
    )
    (root / "run.toml").write_text(
        "[simulation]\nrounds = 2\n[training]\nepochs = 1\n"
        "[client_dp]\nenabled = true\nepsilon = 6.0\n"
    )
    (root / "server.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "server-state"\n'
        'run_config = "run.toml"\nfeatures = 4\ninsecure = true\n'
        "[timeouts]\njoin = 60\nstage = 20\n" + consortium
    )
    for site in sites:
        (root / f"{site}.toml").write_text(
            f'[site]\nid = "{site}"\nserver = "127.0.0.1:{port}"\n'
            f'identity = "pki/sites/{site}/identity.pem"\nstate_dir = "state/{site}"\n'
            f'data = "data/{site}"\ninsecure = true\n' + consortium + site_client_dp
        )
    return sites


def test_site_toml_client_dp_is_parsed_strictly(tmp_path: Path) -> None:
    _deployment(tmp_path, "[client_dp]\nrounds = 2\nepsilon = 6.0\n")
    site = load_site_deployment(tmp_path / "a.toml")
    assert site.client_dp == PinnedClientDp(
        settings=ClientDpSettings(enabled=True, epsilon=6.0), rounds=2
    )
    for bad, message in (
        ("[client_dp]\nepsilon = 6.0\n", "client_dp.rounds"),
        ("[client_dp]\nrounds = 2\nepsilom = 6.0\n", "unknown key client_dp.epsilom"),
        ("[client_dp]\nrounds = 0\n", "rounds must be an integer >= 1"),
        ("[client_dp]\nrounds = 2\nenabled = false\n", "enabled must be true"),
    ):
        _deployment(tmp_path / message.replace(" ", "_"), bad)
        with pytest.raises(ConfigError, match=message):
            load_site_deployment(tmp_path / message.replace(" ", "_") / "a.toml")


def test_server_and_sites_from_toml_with_client_level_dp(tmp_path: Path) -> None:
    sites = _deployment(tmp_path, "[client_dp]\nrounds = 2\nepsilon = 6.0\n")
    site_tomls = [tmp_path / f"{s}.toml" for s in sites]
    errors = run_deployment_threads(tmp_path / "server.toml", site_tomls, insecure=True)
    assert errors == []
    store = ServerStateStore(
        tmp_path / "server-state" / STATE_FILENAME,
        run_config_json=config_json(load_config(tmp_path / "run.toml")),
    )
    assert [m["contributors"] for m in store.history()] == [3, 3]
    report = load_report(tmp_path / "server-state" / CLIENT_DP_STATE)
    assert [e.round_index for e in report.entries] == [0, 1]
