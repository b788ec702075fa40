"""The parallel in-process engine: sites in worker processes give the serial engine's results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.pipeline import (
    run_private_simulation,
    run_site_objects,
    simulated_setups,
)
from fedmap_secure.runtime.parallel import PooledSite
from fedmap_secure.runtime.site import SiteRuntime
from fedmap_secure.runtime.workers import parse_workers, resolve_workers
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401


def _config(*, dp: bool, method: Method = Method.FEDMAP, secagg: bool = True) -> SimulationConfig:
    base = SimulationConfig(method=method, rounds=2, finetune_rounds=1, seed=3)
    return dataclasses.replace(
        base,
        training=dataclasses.replace(base.training, epochs=1),
        privacy=dataclasses.replace(base.privacy, enabled=dp, steps_per_round=3),
        # tiny: 3 sites
        secagg=dataclasses.replace(base.secagg, enabled=secagg, max_colluding_sites=0),
    )


@pytest.mark.parametrize("method", [Method.FEDMAP, Method.LOCAL])
def test_two_workers_give_the_serial_results(tmp_path: Path, method: Method) -> None:
    """Bit for bit with a plain sum (SecAgg's stochastic rounding draws fresh OS randomness
    in every run, serial or not: see the next test), each site training by itself (batched
    training rounds differently in groups of other sizes: the test after)."""
    dataset = tiny_dataset()  # 3 training sites, a fine-tune and an unseen site
    config = _config(dp=False, method=method, secagg=False)
    runs = {
        w: run_private_simulation(
            config, dataset, tmp_path / f"w{w}", workers=w, site_batching=False
        )
        for w in (1, 2)
    }
    serial, pooled = runs[1].result, runs[2].result
    assert pooled.sites == serial.sites
    assert pooled.reports == serial.reports
    assert pooled.server_logs == serial.server_logs
    assert runs[2].privacy == runs[1].privacy | {
        "secure_aggregation": runs[2].privacy["secure_aggregation"]
    }
    if serial.final_state is not None:
        assert pooled.final_state is not None
        np.testing.assert_array_equal(pooled.final_state.gamma, serial.final_state.gamma)
    assert serial.model_files.keys() == pooled.model_files.keys()
    assert serial.model_files  # every training site and (fedmap) the server wrote a model
    for name, path in serial.model_files.items():
        weights = path.with_suffix(".pt")
        assert weights.read_bytes() == pooled.model_files[name].with_suffix(".pt").read_bytes()


def test_batched_training_agrees_with_each_site_alone(tmp_path: Path) -> None:
    """Batched (the default with DP off; serial or in 2 workers) vs each site alone: the same
    steps and epochs at every site, weights and gamma equal to float rounding."""
    dataset = tiny_dataset()
    config = _config(dp=False, secagg=False)
    alone = run_private_simulation(config, dataset, tmp_path / "alone", site_batching=False)
    for w in (1, 2):
        batched = run_private_simulation(config, dataset, tmp_path / f"b{w}", workers=w).result
        assert [
            (r.site, r.round_index, r.training and r.training.steps) for r in batched.reports
        ] == [
            (r.site, r.round_index, r.training and r.training.steps) for r in alone.result.reports
        ]
        assert batched.final_state is not None
        assert alone.result.final_state is not None
        np.testing.assert_allclose(
            batched.final_state.gamma, alone.result.final_state.gamma, rtol=1e-4, atol=1e-6
        )
        assert [s.n_train for s in batched.sites] == [s.n_train for s in alone.result.sites]


def test_with_secagg_two_workers_agree_with_serial_to_the_encoding(tmp_path: Path) -> None:
    dataset = tiny_dataset(finetune=False, unseen=False)
    config = _config(dp=False)
    runs = {
        w: run_private_simulation(config, dataset, tmp_path / f"w{w}", workers=w).result
        for w in (1, 2)
    }
    assert runs[2].final_state is not None
    assert runs[1].final_state is not None
    np.testing.assert_allclose(runs[2].final_state.gamma, runs[1].final_state.gamma, atol=1e-6)
    for a, b in zip(runs[2].server_logs, runs[1].server_logs, strict=True):
        assert a.contributors == b.contributors
        assert a.weight_sum == pytest.approx(b.weight_sum, rel=1e-9)


def test_a_dp_run_in_workers_keeps_each_ledger_in_its_state_folder(tmp_path: Path) -> None:
    run = run_private_simulation(_config(dp=True), tiny_dataset(), tmp_path, workers=2)
    dp = run.privacy["differential_privacy"]
    # a, b, c train; d (fine-tune tier) fine-tunes under its own DP policy and ledger
    assert set(dp["sites"]) == {"a", "b", "c", "d"}
    for name, entry in dp["sites"].items():
        assert 0 < entry["epsilon_spent"] <= dp["target_epsilon"]
        assert (tmp_path / "sites" / name / "privacy_ledger.sqlite3").is_file()


def test_a_site_error_in_a_worker_is_raised_here_with_its_class(tmp_path: Path) -> None:
    dataset = tiny_dataset(finetune=False, unseen=False)
    config = _config(dp=True)
    setups = simulated_setups(config, dataset, {})  # DP on but no state folder: refused
    sites = run_site_objects(config, dataset, setups, 2)
    try:
        assert all(isinstance(s, PooledSite) for s in sites)
        with pytest.raises(ConfigError, match="DP needs a state folder for its ledger"):
            sites[0].prepare(config)
    finally:
        for site in sites:
            site.close()


def test_workers_setting() -> None:
    assert resolve_workers(1, 100) == 1
    assert resolve_workers(4, 3) == 3
    assert resolve_workers("auto", 4) == 1  # a few sites run serially
    assert 1 <= resolve_workers("auto", 100) <= 100
    assert parse_workers("auto") == "auto"
    assert parse_workers("2") == 2
    for bad in ("0", "two", "-1"):
        with pytest.raises(ConfigError, match="--workers must be"):
            parse_workers(bad)
    dataset = tiny_dataset()
    setups = simulated_setups(_config(dp=False), dataset, {})
    assert all(
        isinstance(s, SiteRuntime) for s in run_site_objects(_config(dp=False), dataset, setups, 1)
    )
