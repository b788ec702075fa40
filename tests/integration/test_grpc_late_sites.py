"""Late sites over the wire (issue 13): fine-tune and unseen tiers as real site processes.

``simulate --transport grpc`` on the tiny dataset (3 training sites, a fine-tune site
``d``, an unseen site ``e``) from CSV files, over mutual TLS on 127.0.0.1: the late
sites are ``fedmap-secure site`` processes that fetch the final global model and prior
from the server (``FetchFinal``); ``d`` fine-tunes under its own DP policy, charged to its
own ledger, and writes its personalised model file; ``e`` evaluates the global model.
The same configuration in process runs the same ``SiteRuntime.finish``: the fine-tune
site's ledger holds the same mechanisms and its results agree. The server serves the
final state only to authenticated roster or late-roster identities.
"""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.config.loader import load_config
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.csv_sites import load_csv_sites
from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.data.schema_file import schema_toml_text
from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.fedmap.methods import GlobalState
from fedmap_secure.model_files import load_model
from fedmap_secure.privacy.ledger_store import ledger_path, load_report
from fedmap_secure.runtime.announcement import announcement, config_json
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.transport import codec, rpc
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.channels import open_channel
from fedmap_secure.transport.late_site import fetch_final
from fedmap_secure.transport.pki import Deployment, generate_deployment, load_roster
from fedmap_secure.transport.security import MutualTls
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from tests.cli_runner import TINY_SECAGG
from tests.synthetic import tiny_dataset

RUN = """
[simulation]
method = "fedmap"
rounds = 1
finetune_rounds = 1
seed = 3
[training]
epochs = 1
[prior]
form = "coordinatewise"
[privacy]
epsilon = 4.0
steps_per_round = 2
reproducible_noise = true
"""


def _tiny_csv(folder: Path) -> Path:
    """tiny as a CSV site folder: schema.toml (identity constants), sites.toml (d: finetune)."""
    dataset = tiny_dataset(seed=0)
    schema = FeatureSchema(
        features=tuple(
            FeatureSpec(name=n, low=-50.0, high=50.0, centre=0.0, scale=1.0)
            for n in dataset.feature_names
        )
    )
    folder.mkdir()
    (folder / "schema.toml").write_text(schema_toml_text(schema))
    (folder / "sites.toml").write_text('[sites.d]\ntier = "finetune"\n')
    for site in dataset.sites:
        splits = [("test", site.x_test, site.y_test)]
        if site.n_train:
            splits.append(("train", site.x_train, site.y_train))
        for split, x, y in splits:
            frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=schema.names)
            frame["label"] = y
            frame.to_csv(folder / f"{site.name}_{split}.csv", index=False)
    return folder


def _config(tmp_path: Path) -> SimulationConfig:
    path = tmp_path / "run.toml"
    path.write_text(RUN + TINY_SECAGG)
    return load_config(path)


@pytest.mark.slow
def test_late_sites_are_site_processes_like_in_process(tmp_path: Path) -> None:
    from fedmap_secure.experiments.grpc_run import GrpcSimulation, simulate_grpc_to_dir
    from fedmap_secure.experiments.pipeline import run_private_simulation

    data = _tiny_csv(tmp_path / "data")
    dataset = load_csv_sites(data, label_column="label")
    assert {s.name: s.tier.value for s in dataset.sites} == {
        "a": "train", "b": "train", "c": "train", "d": "finetune", "e": "unseen",
    }  # fmt: skip
    config = _config(tmp_path)
    out = tmp_path / "grpc"
    summary = simulate_grpc_to_dir(
        config=config,
        dataset=dataset,
        spec=GrpcSimulation(
            dataset_spec=f"csv:{data}",
            label_column="label",
            dropout_fraction=0.34,
            corrupt_fraction=0.0,
            max_colluding_sites=0,
            join_timeout=120,
            stage_timeout=30,
        ),
        out_dir=out,
        console=Console(file=io.StringIO()),
    )
    # the late sites ran as site processes and fetched the final state over mTLS
    for site in ("d", "e"):
        log = (out / "grpc" / "sites" / site / "site.log").read_text()
        assert "final state of round 1 fetched" in log, log
        assert (out / "sites" / site / "result.json").is_file()
    assert not (out / "grpc" / "pki" / "sites" / "d" / "identity.pem").exists()
    # d fine-tuned under its own DP policy: charged to its own ledger, model file written
    report = load_report(out / "sites" / "d")
    assert [e.round_index for e in report.entries] == [1]  # fine-tuning after round 0
    assert 0 < report.epsilon_spent <= 4.0
    model_path = out / "sites" / "d" / "models" / "personalised.json"
    model = load_model(model_path)
    assert model.meta.site == "d"
    assert model.meta.epsilon_spent == pytest.approx(report.epsilon_spent)
    by_site = {s["site"]: s for s in summary["sites"]}
    test_rows = pd.read_csv(data / "d_test.csv")  # raw rows: the file predicts what the
    predicted = model.predict(test_rows.drop(columns="label"))  # summary reports
    accuracy = float(np.mean(predicted == test_rows["label"].to_numpy()))
    assert accuracy == pytest.approx(by_site["d"]["personalised"]["accuracy"], abs=1e-9)
    # e evaluated the global model; it trained nothing and keeps no ledger or model
    assert by_site["e"]["global"] is not None
    assert not ledger_path(out / "sites" / "e").exists()
    assert not (out / "sites" / "e" / "models").exists()
    assert summary["privacy"]["differential_privacy"]["sites"]["d"]["epsilon_spent"] > 0

    # one runtime: the same configuration in process
    local = run_private_simulation(config, dataset, tmp_path / "inprocess")
    events = [e.events for e in load_report(tmp_path / "inprocess" / "sites" / "d").entries]
    assert events == [e.events for e in report.entries]  # same mechanisms (q, sigma, steps)
    reference = {s.site: s for s in local.result.sites}
    for site in ("d", "e"):
        for kind in ("personalised", "global"):
            expected = getattr(reference[site], "global_" if kind == "global" else kind)
            if expected is not None:
                got = by_site[site][kind]["accuracy"]
                assert got == pytest.approx(expected.accuracy, abs=0.07), (site, kind)


def _final(config: SimulationConfig) -> tm.FedMapRound:
    state = GlobalState(round_index=2, gamma=np.arange(5, dtype=np.float64), psi=None)
    return announcement(config_text=config_json(config), state=state, setup=None)


def _late_server(pki: Deployment, settings: ServerSettings) -> AggregationServer:
    """A started mTLS server for roster a, b whose only late site is d."""
    return AggregationServer(
        roster=load_roster(pki.roster),
        config=SecAggConfig.for_threat_model(n=2, dropout_fraction=0.0, corrupt_fraction=0.0),
        security=MutualTls(files=pki.server_tls()),
        settings=settings,
        late_sites=frozenset({"d"}),
    ).start()


def _refused_fetch(channel: grpc.Channel, *, sender: str) -> grpc.RpcError:
    """The error a raw ``FetchFinal`` claiming ``sender`` ends with (it must fail)."""
    claim = codec.encode_fetch_final(tm.FetchFinal(version=PROTOCOL_VERSION, sender=sender))
    with pytest.raises(grpc.RpcError) as refused:
        list(rpc.FederationStub(channel).fetch_final(claim))
    return refused.value


def test_the_server_serves_the_final_state_only_to_roster_and_late_identities(
    tmp_path: Path,
) -> None:
    # x has a certificate of the CA but is no late site of the server
    pki = generate_deployment(tmp_path / "pki", ["a", "b"], late_sites=["d", "x"])
    server = _late_server(pki, ServerSettings(join_timeout=5.0, stage_timeout=2.0, join_grace=0.0))
    channels = {s: open_channel(f"localhost:{server.port}", MutualTls(files=pki.site_tls(s)))
                for s in ("d", "x")}  # fmt: skip
    try:
        final = _final(SimulationConfig())
        server.publish(final, timeout=0.2)  # no roster site joins; FetchFinal serves on
        fetched = fetch_final(channels["d"], site_id="d")
        assert fetched.final
        assert fetched.session_id == final.session_id
        np.testing.assert_array_equal(fetched.gamma, final.gamma)
        assert server.wait_late(1.0) == frozenset({"d"})
        with pytest.raises(RemoteProtocolError, match=r"PERMISSION_DENIED.*neither on the roster"):
            fetch_final(channels["x"], site_id="x")
        # a late site's certificate cannot fetch as another identity
        refused = _refused_fetch(channels["d"], sender="a")
        assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "claims sender 'a'" in (refused.details() or "")
    finally:
        for channel in channels.values():
            channel.close()
        server.stop()


def test_fetch_before_the_end_of_training_waits_then_says_so(tmp_path: Path) -> None:
    pki = generate_deployment(tmp_path / "pki", ["a", "b"], late_sites=["d"])
    server = _late_server(pki, ServerSettings(join_timeout=0.3, stage_timeout=2.0))
    channel = open_channel(f"localhost:{server.port}", MutualTls(files=pki.site_tls("d")))
    try:
        early = _refused_fetch(channel, sender="d")
        assert early.code() is grpc.StatusCode.UNAVAILABLE
        assert "training has not ended" in (early.details() or "")
    finally:
        channel.close()
        server.stop()


_SITE_TOML = '[site]\nid = "{id}"\nserver = "localhost:1"\ntier = "{tier}"\ninsecure = true\n'
_CONSORTIUM_TOML = (
    '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.0\n'
    'corrupt_fraction = 0.0\nlate_sites = ["d"]\n'
)


def _site_toml(tmp_path: Path, site: str, tier: str) -> Path:
    """A site file (site ``site`` of tier ``tier``) of a deployment whose late roster is d."""
    generate_deployment(tmp_path / "pki", ["a", "b"], late_sites=["d"])
    path = tmp_path / f"{site}.toml"
    path.write_text(_SITE_TOML.format(id=site, tier=tier) + _CONSORTIUM_TOML)
    return path


def test_a_late_site_toml_is_on_the_late_roster(tmp_path: Path) -> None:
    from fedmap_secure.transport.deploy_config import load_site_deployment

    deployment = load_site_deployment(_site_toml(tmp_path, "d", "finetune"))
    assert (deployment.tier.value, deployment.identity) == ("finetune", None)
    layout = Deployment(root=tmp_path / "pki")  # a TLS certificate, no identity key
    assert layout.site_tls("d").certificate.is_file()
    assert not layout.identity("d").exists()


@pytest.mark.parametrize(
    ("site", "tier", "message"),
    [
        ("q", "unseen", r"must be on consortium\.late_sites"),
        ("a", "train", r"site\.identity is required"),
        ("d", "bystander", r"site\.tier must be one of"),
    ],
)
def test_a_site_toml_off_its_roster_or_tier_is_refused(
    tmp_path: Path, site: str, tier: str, message: str
) -> None:
    from fedmap_secure.errors import ConfigError
    from fedmap_secure.transport.deploy_config import load_site_deployment

    with pytest.raises(ConfigError, match=message):
        load_site_deployment(_site_toml(tmp_path, site, tier))
