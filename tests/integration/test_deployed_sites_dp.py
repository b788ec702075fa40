"""The real CLI processes (``fedmap-secure server`` + 3 x ``fedmap-secure site``, mutual TLS,
CSV sites, DP on by default in each site's own site.toml): every site trains under DP and
keeps a ledger that outlives the run; the ledger events are, mechanism by mechanism, those of
the same configuration under ``simulate --transport grpc`` (one code path: the site runtime);
a second run continues the ledger and a third, over the exhausted budget, is refused; each
site's model file and the server's global model file (``server.schema``) predict the site's
raw test rows with the accuracy its result (and ``simulate``'s summary) reports.
(THREAT_MODEL O2: DP holds for deployments, not only in simulation.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedmap_secure.data.heart import heart_schema, raw_heart_sites
from fedmap_secure.data.schema_file import schema_toml_text
from fedmap_secure.model_files import RawFeatureModel, load_model, read_meta
from fedmap_secure.privacy.events import Event
from fedmap_secure.privacy.ledger_store import ledger_path, load_report

ROOT = Path(__file__).resolve().parents[2]
RUN = """
[simulation]
method = "fedmap"
rounds = 2
finetune_rounds = 1
[training]
epochs = 1
[prior]
form = "coordinatewise"
[privacy]
epsilon = {epsilon}
steps_per_round = 2
[secagg]
dropout_fraction = 0.34
corrupt_fraction = 0.0
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "fedmap_secure.cli", *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


def _write_csvs(folder: Path) -> tuple[list[str], int]:
    """Three heart sites as raw CSV files plus the consortium's declared ``schema.toml``."""
    schema = heart_schema()
    folder.mkdir(parents=True)
    (folder / "schema.toml").write_text(schema_toml_text(schema))
    sites = raw_heart_sites()[:3]
    for site in sites:
        for split, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=schema.names)
            frame["label"] = y
            frame.to_csv(folder / f"{site.name}_{split}.csv", index=False)
    return [s.name for s in sites], len(schema)


def _deploy(root: Path, sites: list[str], run: str, *, refused: bool = False) -> dict[str, int]:
    """One deployment run: the server and one ``fedmap-secure site`` per site; exit codes.

    ``refused``: every site is expected to refuse; the server (which would wait out its
    join timeout for sites that never come) is stopped once they have exited."""
    port = _free_port()
    consortium = (
        '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.34\n'
        "corrupt_fraction = 0.0\n"
    )
    (root / f"server-{run}.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "server-{run}"\n'
        f'run_config = "{run}.toml"\nschema = "data/schema.toml"\n'
        '[tls]\nca = "pki/ca.pem"\ncertificate = "pki/server/server.pem"\n'
        'private_key = "pki/server/server.key"\n[timeouts]\njoin = 60\nstage = 20\n' + consortium
    )
    for site in sites:  # DP is on by the site's own [privacy]: its budget epsilon 2
        (root / f"{site}-{run}.toml").write_text(
            f'[site]\nid = "{site}"\nserver = "localhost:{port}"\n'
            f'identity = "pki/sites/{site}/identity.pem"\nstate_dir = "state/{site}"\n'
            f'data = "data"\nsite_records = "records-{run}"\n'
            f'[tls]\nca = "pki/ca.pem"\ncertificate = "pki/sites/{site}/site.pem"\n'
            f'private_key = "pki/sites/{site}/site.key"\n'
            "[privacy]\nepsilon = 2.0\n" + consortium
        )
    server = _cli("server", "--config", f"server-{run}.toml", log=root / f"server-{run}.log")
    procs = {
        site: _cli("site", "--config", f"{site}-{run}.toml", log=root / f"{site}-{run}.log")
        for site in sites
    }
    codes = {site: p.wait(timeout=240) for site, p in procs.items()}
    if refused:
        server.terminate()
    codes["server"] = server.wait(timeout=240)
    return codes


def _accuracy(model: Path | RawFeatureModel, rows: pd.DataFrame) -> float:
    """Accuracy of ``load_model(model)`` on raw CSV rows (feature columns + label)."""
    if isinstance(model, Path):
        model = load_model(model)
    predicted = model.predict(rows.drop(columns="label"))
    return float(np.mean(predicted == rows["label"].to_numpy()))


def _events(state: Path) -> list[tuple[Event, ...]]:
    return [entry.events for entry in load_report(state).entries]


@pytest.mark.slow
def test_deployed_sites_keep_a_dp_ledger_like_simulated_sites(tmp_path: Path) -> None:
    sites, _ = _write_csvs(tmp_path / "data")
    (tmp_path / "run1.toml").write_text(RUN.format(epsilon=1.0))
    (tmp_path / "run2.toml").write_text(RUN.format(epsilon=2.0))
    (tmp_path / "run3.toml").write_text(RUN.format(epsilon=2.0))
    keygen = _cli("keygen", "--sites", ",".join(sites), "--out", "pki", log=tmp_path / "kg.log")
    assert keygen.wait(timeout=240) == 0
    simulated = _cli(
        "simulate", "--dataset", f"csv:{tmp_path / 'data'}", "--label-column", "label",
        "--config", "run1.toml", "--transport", "grpc", "--out", "sim",
        log=tmp_path / "sim.log",
    )  # fmt: skip

    # run 1: the run asks for epsilon 1 of each site's own budget of 2
    codes = _deploy(tmp_path, sites, "run1")
    assert codes == dict.fromkeys([*sites, "server"], 0), (tmp_path / "server-run1.log").read_text()
    first: dict[str, float] = {}
    run1_events: dict[str, list[tuple[Event, ...]]] = {}
    global_model = load_model(tmp_path / "server-run1" / "models" / "global.json")
    assert global_model.meta.site == "global"
    for site in sites:
        state = tmp_path / "state" / site
        assert ledger_path(state).is_file()
        report = load_report(state)
        assert [e.round_index for e in report.entries] == [0, 1]
        assert 0 < report.epsilon_spent <= 1.0
        first[site] = report.epsilon_spent
        run1_events[site] = [entry.events for entry in report.entries]
        # its personalised model file, the epsilon its ledger had spent (issue 13)
        meta, weights, _ = read_meta(state / "models" / "personalised.json")
        assert weights.is_file()
        assert meta.site == site
        assert meta.epsilon_spent == pytest.approx(report.epsilon_spent)
        # load_model on the site's file predicts its raw test rows with the accuracy its
        # result reports; so does the server's global model (server.schema)
        rows = pd.read_csv(tmp_path / "data" / f"{site}_test.csv")
        result = json.loads((state / "result.json").read_text())["result"]
        assert _accuracy(state / "models" / "personalised.json", rows) == pytest.approx(
            result["personalised"]["accuracy"], abs=1e-9
        )
        assert _accuracy(global_model, rows) == pytest.approx(
            result["global"]["accuracy"], abs=1e-9
        )
    log = (tmp_path / "server-run1.log").read_text()
    assert "global model written to" in log
    assert "round 2/2: 3 contributor(s)" in log
    assert "epsilon spent" in (tmp_path / f"{sites[0]}-run1.log").read_text()

    # run 2 (epsilon 2): the same ledgers continue, calibrated against what they already hold
    # (the simulation, which keeps its own ledgers, may still be running meanwhile)
    codes = _deploy(tmp_path, sites, "run2")
    assert codes == dict.fromkeys([*sites, "server"], 0), (tmp_path / "server-run2.log").read_text()
    for site in sites:
        report = load_report(tmp_path / "state" / site)
        assert [e.round_index for e in report.entries] == [0, 1, 0, 1]
        assert first[site] < report.epsilon_spent <= 2.0

    # run 3: the budget is exhausted; every site refuses before any release
    codes = _deploy(tmp_path, sites, "run3", refused=True)
    assert all(codes[site] == 2 for site in sites)
    for site in sites:
        text = (tmp_path / f"{site}-run3.log").read_text()
        assert "budget is exhausted" in text
        assert len(load_report(tmp_path / "state" / site).entries) == 4

    # simulate --transport grpc of run 1's configuration: the same ledger events, mechanism by
    # mechanism (q, sigma, steps, omega release); its model files and summary.json agree
    assert simulated.wait(timeout=240) == 0, (tmp_path / "sim.log").read_text()
    summary = {
        entry["site"]: entry
        for entry in json.loads((tmp_path / "sim" / "summary.json").read_text())["sites"]
    }
    simulated_global = load_model(tmp_path / "sim" / "models" / "global.json")
    for site in sites:
        assert run1_events[site] == _events(tmp_path / "sim" / "sites" / site)
        rows = pd.read_csv(tmp_path / "data" / f"{site}_test.csv")
        simulated_file = tmp_path / "sim" / "sites" / site / "models" / "personalised.json"
        assert _accuracy(simulated_file, rows) == pytest.approx(
            summary[site]["personalised"]["accuracy"], abs=1e-9
        )
        assert _accuracy(simulated_global, rows) == pytest.approx(
            summary[site]["global"]["accuracy"], abs=1e-9
        )


@pytest.mark.slow
def test_a_site_process_that_refuses_ends_the_grpc_simulation_with_its_error(
    tmp_path: Path,
) -> None:
    """A site whose budget cannot cover the run refuses before any release; the driver stops
    the run with that site's one-line error at once (not after the join timeout)."""
    run = _cli(
        "simulate", "--dataset", "heart", "--transport", "grpc", "--rounds", "2",
        "--epsilon", "1e-6", "--out", "out", log=tmp_path / "sim.log",
    )  # fmt: skip
    assert run.wait(timeout=240) == 2
    text = (tmp_path / "sim.log").read_text()
    assert "site process" in text
    assert "too small to run even" in text
    assert "Traceback" not in text
