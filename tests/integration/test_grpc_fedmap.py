"""FedMAP over real gRPC (4 heart sites as threads) against the in-process simulation.

Both transports drive the same ``runtime.SiteRuntime`` and ``runtime.ServerRuntime``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from rich.console import Console

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config.loader import load_config
from fedmap_secure.config.schema import PriorForm, SimulationConfig
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.data import load_dataset
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import BudgetExceededError
from fedmap_secure.fedmap.methods import GlobalState, ServerLog
from fedmap_secure.fedmap.site import Phase
from fedmap_secure.runtime.announcement import announcement, config_json
from fedmap_secure.runtime.inprocess import over_the_wire, run_simulation
from fedmap_secure.runtime.privacy import SitePolicy
from fedmap_secure.runtime.records import read_records, write_records
from fedmap_secure.runtime.results import TrainerFactory
from fedmap_secure.runtime.server import ServerRuntime
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig, LocalTrainingResult
from fedmap_secure.training.local import AdamMapTrainer
from fedmap_secure.transport.security import Insecure
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.server_channel import GrpcServerChannel
from fedmap_secure.transport.site import SiteClient, SiteOutcome, SiteReport
from fedmap_secure.transport.site_driver import drive_site
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore


def _trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    return AdamMapTrainer(training)


def _config(rounds: int) -> SimulationConfig:
    """A non-private run (every site here has DP off by its own policy)."""
    config = load_config(None)
    training = dataclasses.replace(config.training, epochs=2)
    privacy = dataclasses.replace(config.privacy, enabled=False)
    return dataclasses.replace(
        config, rounds=rounds, training=training, finetune_rounds=1, privacy=privacy
    )


def _runtime(
    data: SiteData, dataset: FederatedDataset, trainer: TrainerFactory = _trainer
) -> SiteRuntime:
    return SiteRuntime(
        SiteSetup(
            data=data,
            feature_names=dataset.feature_names,
            n_classes=dataset.n_classes,
            policy=SitePolicy(privacy=_config(1).privacy, source="test (DP off)"),
            plain_trainer=trainer,
        )
    )


@dataclasses.dataclass
class _SiteRun:
    runtime: SiteRuntime
    rounds: list[SiteReport]


class _CrashError(Exception):
    """The server process 'dies' right after storing a round."""


def _run_wire(
    dataset: FederatedDataset,
    config: SimulationConfig,
    state_dir: Path,
    crash_after_round: int | None = None,
    trainer: TrainerFactory = _trainer,
) -> tuple[np.ndarray, dict[str, _SiteRun]]:
    torch.set_num_threads(1)
    identities = {s.name: IdentityKey.generate() for s in dataset.sites}
    roster = Roster.from_mapping({s: k.public for s, k in identities.items()})
    secagg = SecAggConfig.for_threat_model(
        n=len(identities), dropout_fraction=0.25, corrupt_fraction=0.0
    )
    server = AggregationServer(
        roster=roster,
        config=secagg,
        security=Insecure(),
        settings=ServerSettings(join_timeout=60, stage_timeout=10),
    ).start()
    runs: dict[str, _SiteRun] = {}

    def site_main(data: SiteData) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        client = SiteClient(
            channel=channel,
            site_id=data.name,
            identity=identities[data.name],
            roster=roster,
            config=secagg,
        )
        runtime = _runtime(data, dataset, trainer)
        rounds = drive_site(client=client, handler=runtime)
        runs[data.name] = _SiteRun(runtime=runtime, rounds=rounds)
        channel.close()

    threads = [threading.Thread(target=site_main, args=(s,)) for s in dataset.sites]
    for t in threads:
        t.start()

    def crash(state: GlobalState, _log: ServerLog) -> None:
        if state.round_index - 1 == crash_after_round:
            raise _CrashError

    def serve(server: AggregationServer) -> GlobalState:
        store = ServerStateStore(state_dir / STATE_FILENAME, run_config_json=config_json(config))
        return ServerRuntime(
            config=config,
            n_features=len(dataset.feature_names),
            n_classes=dataset.n_classes,
            channel=GrpcServerChannel(server, final_timeout=30),
            sites=[s.name for s in dataset.sites],
            store=store,
            on_round=crash,
        ).run()

    try:
        try:
            final = serve(server)
        except _CrashError:
            port = server.port
            server.stop()
            server = AggregationServer(
                roster=roster,
                config=secagg,
                security=Insecure(),
                address=f"127.0.0.1:{port}",
                settings=ServerSettings(join_timeout=60, stage_timeout=10),
            ).start()
            final = serve(server)
    finally:
        for t in threads:
            t.join(timeout=60)
        server.stop()
    return final.gamma, runs


@pytest.mark.parametrize("prior", list(PriorForm))
def test_fedmap_over_grpc_matches_in_process(tmp_path: Path, prior: PriorForm) -> None:
    dataset = load_dataset("heart", label_column=None, seed=0)
    config = _config(rounds=2)
    config = dataclasses.replace(config, prior=dataclasses.replace(config.prior, form=prior))
    gamma, runs = _run_wire(dataset, config, tmp_path)
    reference = run_simulation(config, dataset, PlainSum(), _trainer)
    assert reference.final_state is not None
    np.testing.assert_allclose(gamma, reference.final_state.gamma, atol=1e-6)
    for site in reference.sites:
        wire = runs[site.site].runtime.result
        assert wire is not None
        assert wire.personalised is not None
        assert site.personalised is not None
        assert wire.personalised.accuracy == pytest.approx(site.personalised.accuracy, abs=0.02)


class _ExhaustedTrainer:
    def train(self, *args: object, **kwargs: object) -> LocalTrainingResult:
        raise BudgetExceededError("site switzerland: epsilon budget 1.0 would be exceeded")


def test_site_with_exhausted_budget_declines_and_the_round_goes_on(tmp_path: Path) -> None:
    def trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
        return _ExhaustedTrainer() if site.name == "switzerland" else AdamMapTrainer(training)

    dataset = load_dataset("heart", label_column=None, seed=0)
    config = _config(rounds=2)
    _, runs = _run_wire(dataset, config, tmp_path, trainer=trainer)
    declined = [r.outcome for r in runs["switzerland"].rounds[:2]]
    assert declined == [SiteOutcome.DECLINED, SiteOutcome.DECLINED]
    store = ServerStateStore(tmp_path / STATE_FILENAME, run_config_json=config_json(config))
    assert [m["contributors"] for m in store.history()] == [3, 3]


def test_server_restarted_between_rounds_resumes(tmp_path: Path) -> None:
    dataset = load_dataset("heart", label_column=None, seed=0)
    config = _config(rounds=2)
    gamma, _ = _run_wire(dataset, config, tmp_path, crash_after_round=0)
    reference = run_simulation(config, dataset, PlainSum(), _trainer)
    assert reference.final_state is not None
    np.testing.assert_allclose(gamma, reference.final_state.gamma, atol=1e-6)
    store = ServerStateStore(tmp_path / STATE_FILENAME, run_config_json=config_json(config))
    assert [m["round_index"] for m in store.history()] == [0, 1]


@pytest.mark.slow
def test_simulate_over_grpc_with_site_processes(tmp_path: Path) -> None:
    """One OS process per site over mutual TLS; summary.json as for the in-process run."""
    from fedmap_secure.experiments.grpc_run import GrpcSimulation, simulate_grpc_to_dir
    from fedmap_secure.transcript.store import verify_files

    dataset = load_dataset("heart", label_column=None, seed=0)
    config = _config(rounds=2)
    summary = simulate_grpc_to_dir(
        config=config,
        dataset=dataset,
        spec=GrpcSimulation(dataset_spec="heart", join_timeout=120, stage_timeout=30),
        out_dir=tmp_path,
        console=Console(file=io.StringIO()),
    )
    reference = run_simulation(config, dataset, PlainSum(), _trainer)
    assert reference.final_state is not None
    store = ServerStateStore(
        tmp_path / "grpc" / "server-state" / STATE_FILENAME, run_config_json=config_json(config)
    )
    stored = store.latest()
    assert stored is not None
    assert stored.next_round == 2
    np.testing.assert_allclose(stored.gamma, reference.final_state.gamma, atol=1e-6)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert [s["site"] for s in summary["sites"]] == [s.site for s in reference.sites]
    assert summary["privacy"]["secure_aggregation"]["transport"] == "grpc (mutual TLS)"
    for site, expected in zip(summary["sites"], reference.sites, strict=True):
        assert expected.personalised is not None
        assert site["personalised"]["accuracy"] == pytest.approx(
            expected.personalised.accuracy, abs=0.02
        )
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    phases = [row.split(",")[1] for row in rows[1:]]
    assert phases.count("train") == 2 * 4  # 2 rounds x 4 training sites
    # then the personalisation solve at each site process, except switzerland (one class)
    assert phases.count("personalise") == 3
    assert len(rows) == 1 + 2 * 4 + 3
    transcripts = summary["privacy"]["secure_aggregation"]["transcripts"]
    assert transcripts["rounds"] == 2
    assert transcripts["head"] == (tmp_path / "transcripts" / "HEAD").read_text().strip()
    assert len(list((tmp_path / "site-records").glob("*/round-0001.json"))) == 4
    verified = verify_files(
        [tmp_path / "transcripts"],
        tmp_path / "roster.json",
        site_records=tmp_path / "site-records",
        head=bytes.fromhex(transcripts["head"]),
    )
    assert verified == 2


def test_non_training_site_finishes_offline_like_in_process(tmp_path: Path) -> None:
    heart = load_dataset("heart", label_column=None, seed=0)
    sites = tuple(
        dataclasses.replace(s, tier=Tier.FINETUNE) if s.name == "va" else s for s in heart.sites
    )
    dataset = dataclasses.replace(heart, sites=sites)
    config = _config(rounds=1)
    reference = run_simulation(config, dataset, PlainSum(), _trainer)
    assert reference.final_state is not None
    final = announcement(config_text=config_json(config), state=reference.final_state, setup=None)
    (va,) = [s for s in sites if s.name == "va"]
    run = _runtime(va, dataset)
    assert run.handle(over_the_wire(final)) is None
    (expected,) = [s for s in reference.sites if s.site == "va"]
    assert run.result == expected
    assert [r.phase for r in run.reports] == [Phase.FINETUNE] * config.finetune_rounds
    write_records(tmp_path / "va.json", run.result, run.reports)
    assert read_records(tmp_path / "va.json") == (run.result, run.reports)
