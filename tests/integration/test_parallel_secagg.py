"""Pooled runs: each site's SecAgg client in its worker, DP ledgers and models as serial."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.cli import main
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.experiments.pipeline import run_private_simulation
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401

LEDGER = "privacy_ledger.sqlite3"


def _config(*, dp: bool, secagg: bool) -> SimulationConfig:
    base = SimulationConfig(rounds=2, finetune_rounds=1, seed=5)
    return dataclasses.replace(
        base,
        training=dataclasses.replace(base.training, epochs=1),
        privacy=dataclasses.replace(
            base.privacy, enabled=dp, steps_per_round=3, reproducible_noise=True
        ),
        secagg=dataclasses.replace(base.secagg, enabled=secagg, max_colluding_sites=0),
    )


def _charges(path: Path) -> list[tuple[int, str, str, float]]:
    """A ledger's charges without their timestamps (and the row hashes that cover them)."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT round_index, events_json, note, epsilon_after FROM charges ORDER BY sequence"
        ).fetchall()
    return [(int(r), str(e), str(n), float(x)) for r, e, n, x in rows]


def test_a_pooled_secagg_run_verifies_against_the_sites_own_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = tiny_dataset(finetune=False, unseen=False)
    with caplog.at_level(logging.INFO, logger="fedmap_secure.runtime.parallel_secagg"):
        run = run_private_simulation(_config(dp=False, secagg=True), dataset, tmp_path, workers=2)
    assert "sites' sessions in their workers" in caplog.text
    transcripts = run.privacy["secure_aggregation"]["transcripts"]
    assert transcripts["rounds"] == 2
    records = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("site-records/*/*"))
    assert len(records) == 3 * 2  # each training site wrote its record of each round
    argv = ["verify-transcript", str(tmp_path / "transcripts")]
    argv += ["--roster", str(tmp_path / "roster.json"), "--site-records"]
    argv += [str(tmp_path / "site-records"), "--head", transcripts["head"]]
    assert main(argv) == 0
    for log in run.result.server_logs:
        assert log.contributors == 3


def test_dp_in_workers_gives_the_serial_ledgers_and_models(tmp_path: Path) -> None:
    """Seeded DP noise, plain sum: ledgers (every charge) and model weights bit for bit."""
    dataset = tiny_dataset()
    config = _config(dp=True, secagg=False)
    runs = {
        w: run_private_simulation(config, dataset, tmp_path / f"w{w}", workers=w) for w in (1, 2)
    }
    assert runs[2].epsilon_spent == runs[1].epsilon_spent
    for site in ("a", "b", "c", "d"):
        serial = _charges(tmp_path / "w1" / "sites" / site / LEDGER)
        assert serial  # every training site (and d, fine-tuning) charged its ledger
        assert _charges(tmp_path / "w2" / "sites" / site / LEDGER) == serial
    models = runs[1].result.model_files
    assert models.keys() == runs[2].result.model_files.keys()
    for name, path in models.items():
        pooled = runs[2].result.model_files[name]
        assert path.with_suffix(".pt").read_bytes() == pooled.with_suffix(".pt").read_bytes()


def test_dp_with_secagg_in_workers_charges_what_serial_charges(tmp_path: Path) -> None:
    """With SecAgg the sum differs by the stochastic rounding only; the charges are the same."""
    dataset = tiny_dataset(finetune=False, unseen=False)
    config = _config(dp=True, secagg=True)
    runs = {
        w: run_private_simulation(config, dataset, tmp_path / f"w{w}", workers=w) for w in (1, 2)
    }
    for site in ("a", "b", "c"):
        assert _charges(tmp_path / "w2" / "sites" / site / LEDGER) == _charges(
            tmp_path / "w1" / "sites" / site / LEDGER
        )
        dp = [
            json.loads((tmp_path / f"w{w}" / "sites" / site / "dp.json").read_text())
            for w in (1, 2)
        ]
        assert dp[0]["sites"] == dp[1]["sites"]
    final = [runs[w].result.final_state for w in (1, 2)]
    assert final[0] is not None
    assert final[1] is not None
    np.testing.assert_allclose(final[1].gamma, final[0].gamma, atol=1e-6)
