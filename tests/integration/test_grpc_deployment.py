"""server.toml + site.toml over mutual TLS: the deployment path end to end (4 CSV sites)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fedmap_secure.config.loader import load_config
from fedmap_secure.data import load_dataset
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.schema_file import schema_toml_text
from fedmap_secure.errors import ConfigError
from fedmap_secure.runtime.announcement import config_json
from fedmap_secure.transcript.store import verify_files
from fedmap_secure.transport.keygen import keygen_consortium
from fedmap_secure.transport.processes import run_server, run_site
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore
from tests.integration.grpc_harness import run_deployment_threads

RUN = """
[simulation]
rounds = 2
finetune_rounds = 1
[training]
epochs = 2
"""


def _write_csvs(root: Path) -> tuple[list[str], int]:
    dataset = load_dataset("heart", label_column=None, seed=0)
    names = [f"f{i}" for i in range(len(dataset.feature_names))]
    for site in dataset.sites:
        folder = root / "data" / site.name
        folder.mkdir(parents=True)
        # the rows below are already scaled: their declared schema is the identity
        identity = FeatureSchema.identity(names)
        (folder / "schema.toml").write_text(schema_toml_text(identity))
        for split, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=names)
            frame["label"] = y
            frame.to_csv(folder / f"{site.name}_{split}.csv", index=False)
    return [s.name for s in dataset.sites], len(names)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_server_and_sites_from_toml(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    sites, features = _write_csvs(tmp_path)
    keygen_consortium(tmp_path / "pki", sites)
    port = _free_port()
    consortium = (
        '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.25\n'
        "corrupt_fraction = 0.0\n"
    )
    (tmp_path / "run.toml").write_text(RUN)
    (tmp_path / "server.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "server-state"\n'
        f'run_config = "run.toml"\nfeatures = {features}\n'
        '[tls]\nca = "pki/ca.pem"\ncertificate = "pki/server/server.pem"\n'
        'private_key = "pki/server/server.key"\n[timeouts]\njoin = 60\nstage = 20\n' + consortium
    )
    for site in sites:
        (tmp_path / f"{site}.toml").write_text(
            f'[site]\nid = "{site}"\nserver = "localhost:{port}"\n'
            f'identity = "pki/sites/{site}/identity.pem"\nstate_dir = "state/{site}"\n'
            f'data = "data/{site}"\n'
            f'[tls]\nca = "pki/ca.pem"\ncertificate = "pki/sites/{site}/site.pem"\n'
            f'private_key = "pki/sites/{site}/site.key"\n' + consortium
        )
    site_tomls = [tmp_path / f"{s}.toml" for s in sites]
    errors = run_deployment_threads(tmp_path / "server.toml", site_tomls)
    assert errors == []
    store = ServerStateStore(
        tmp_path / "server-state" / STATE_FILENAME,
        run_config_json=config_json(load_config(tmp_path / "run.toml")),
    )
    assert [m["contributors"] for m in store.history()] == [4, 4]
    for site in sites:
        result = json.loads((tmp_path / "state" / site / "result.json").read_text())["result"]
        assert result["site"] == site
        assert 0.0 <= result["personalised"]["accuracy"] <= 1.0
    recorded = tmp_path / "server-state"
    head = bytes.fromhex((recorded / "transcripts" / "HEAD").read_text())
    for site in sites:  # each site's own records cross-check the server's transcripts
        records = tmp_path / "state" / site / "site-records"
        assert len(list(records.glob(f"{site}/round-*.json"))) == 2
        verified = verify_files(
            [recorded / "transcripts"], recorded / "roster.json", site_records=records, head=head
        )
        assert verified == 2


def test_plaintext_needs_the_explicit_flag(tmp_path: Path) -> None:
    keygen_consortium(tmp_path / "pki", ["site-a", "site-b"])
    consortium = (
        '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.0\ncorrupt_fraction = 0.0\n'
    )
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nid = "site-a"\nserver = "127.0.0.1:1"\n'
        'identity = "pki/sites/site-a/identity.pem"\ndata = "nowhere"\ninsecure = true\n'
        + consortium
    )
    with pytest.raises(ConfigError, match="pass --insecure"):
        run_site(path)
    server = tmp_path / "server.toml"
    server.write_text(
        '[server]\nfeatures = 3\n[tls]\nca = "pki/ca.pem"\ncertificate = "pki/server/server.pem"\n'
        'private_key = "pki/server/server.key"\n' + consortium
    )
    with pytest.raises(ConfigError, match="set insecure = true"):
        run_server(server, insecure=True)
