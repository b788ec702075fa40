"""The private, secure pipeline end to end: SecAgg + per-site DP ledgers (tiny data, few rounds)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config.privacy import SiteBudgetOverride
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.experiments.pipeline import build_aggregator, run_private_simulation
from fedmap_secure.privacy.ledger_store import load_report
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.secagg.quantize import Quantizer
from tests.cli_runner import TINY_SECAGG
from tests.cli_runner import run_cli as _cli
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
FAST = "[training]\nepochs = 1\n[privacy]\nsteps_per_round = 3\n" + TINY_SECAGG


def _simulate(tmp_path: Path, *extra: str, config: str = FAST, rounds: int = 2) -> Path:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(config)
    out = tmp_path / "run"
    args = ["simulate", "--dataset", "tiny", "--config", str(cfg), "--rounds", str(rounds)]
    code, _ = _cli([*args, "--out", str(out), *extra])
    assert code == 0
    return out


def _config(**privacy: object) -> SimulationConfig:
    base = SimulationConfig(method=Method.FEDMAP, rounds=2, finetune_rounds=1, seed=5)
    return dataclasses.replace(
        base,
        training=dataclasses.replace(base.training, epochs=1),
        privacy=dataclasses.replace(base.privacy, steps_per_round=3, **privacy),  # type: ignore[arg-type]
        secagg=dataclasses.replace(base.secagg, max_colluding_sites=0),  # tiny: 3 sites
    )


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DP + SecAgg run (epsilon 2, 2 rounds) shared by the read-only tests below."""
    return _simulate(tmp_path_factory.mktemp("private"), "--epsilon", "2")


def test_dp_and_secagg_run_spends_within_budget_and_ledger_agrees(private_run: Path) -> None:
    out = private_run
    summary = json.loads((out / "summary.json").read_text())
    secure = summary["privacy"]["secure_aggregation"]
    assert (secure["n"], secure["k"], secure["t"]) == (3, 2, 2)
    assert secure["protocol"].startswith("SecAgg")
    assert secure["clipped_coordinates"] == {
        "by_sites_before_contributing": 0,
        "by_secure_aggregation": 0,
    }
    with (out / "metrics.csv").open() as fh:
        assert {r["declined"] for r in csv.DictReader(fh)} == {"0"}
    dp = summary["privacy"]["differential_privacy"]
    assert dp["target_epsilon"] == 2.0
    assert dp["reproducible"] is False
    assert dp["noise_source"] == "os-csprng"
    assert dp["metrics_released"] is False
    spent = {s["site"]: s["epsilon_spent"] for s in summary["sites"]}
    # d (fine-tune tier) fine-tunes under its own policy after training: its own ledger,
    # one charge (after the last round), no omega released; e (unseen) trains nothing
    assert 0 < spent["d"] <= 2.0
    finetune = load_report(out / "sites" / "d")
    rounds = [e.round_index for e in finetune.entries]  # one per fine-tuning round
    assert rounds == list(range(2, 2 + len(rounds)))
    assert rounds
    assert dp["sites"]["d"]["omega_noise_multiplier"] is None
    assert spent["e"] == 0.0
    for site in "abc":
        assert 0 < spent[site] <= 2.0
        report = load_report(out / "sites" / site)
        assert report.epsilon_spent == pytest.approx(spent[site], rel=1e-12)
        assert [e.round_index for e in report.entries] == [0, 1]
        info = dp["sites"][site]
        assert info["cross_check_epsilon"] >= spent[site] * 0.9
        assert info["noise_multiplier"] >= 0.5
        assert info["omega_noise_multiplier"] > 0


def test_ledger_show_text_and_json(private_run: Path) -> None:
    out = private_run
    code, text = _cli(["ledger", "show", "--site-state", str(out / "sites" / "a")])
    assert code == 0
    assert "budget epsilon 2" in text
    assert "Poisson-subsam" in text
    assert "cumulative" in text
    code, text = _cli(["ledger", "show", "--site-state", str(out / "sites" / "a"), "--json"])
    assert code == 0
    doc = json.loads(text)
    assert doc["budget"]["epsilon"] == 2.0
    assert [e["round"] for e in doc["entries"]] == [0, 1]
    assert {m["type"] for e in doc["entries"] for m in e["mechanisms"]} >= {"gaussian"}
    assert doc["epsilon_spent"] <= 2.0


def test_site_out_of_budget_declines_and_the_secagg_round_completes(tmp_path: Path) -> None:
    config = dataclasses.replace(
        _config(site=(SiteBudgetOverride(site="c", planned_rounds=1),)), rounds=3
    )
    data = tiny_dataset(seed=5)
    run = run_private_simulation(config, data, tmp_path / "run")  # SecAgg n=3, t=2
    assert run.privacy["secure_aggregation"]["t"] == 2
    declined = {(r.site, r.round_index) for r in run.result.reports if r.declined}
    assert declined == {("c", 1), ("c", 2)}
    assert [log.contributors for log in run.result.server_logs] == [3, 2, 2]
    assert run.privacy["differential_privacy"]["sites"]["c"]["declined_rounds"] == [1, 2]
    assert [e.round_index for e in load_report(tmp_path / "run" / "sites" / "c").entries] == [0]
    assert run.epsilon_spent is not None
    assert all(spent <= 4.0 for spent in run.epsilon_spent.values())


def test_dp_changes_the_model_and_secagg_matches_plain_sum_within_encoding_error(
    tmp_path: Path,
) -> None:
    data = tiny_dataset(seed=5)
    plain_cfg = dataclasses.replace(_config(enabled=False), rounds=1)
    plain = run_private_simulation(plain_cfg, data, tmp_path / "p", aggregator=PlainSum())
    secure_agg = build_aggregator(plain_cfg, data)
    assert isinstance(secure_agg, SecureAggregator)
    secure = run_private_simulation(plain_cfg, data, tmp_path / "s", aggregator=secure_agg)
    private = run_private_simulation(dataclasses.replace(_config(), rounds=1), data, tmp_path / "d")
    assert plain.result.final_state is not None
    assert secure.result.final_state is not None
    assert private.result.final_state is not None
    g_plain, g_secure = plain.result.final_state.gamma, secure.result.final_state.gamma
    # gamma = sum(omega theta) / sum(omega): bound the error of both sums (Quantizer.error_bound).
    encoding = secure.privacy["secure_aggregation"]["encoding"]
    e_num, e_den = (encoding[f]["max_sum_error"] for f in ("omega_theta", "omega"))
    w = secure.result.server_logs[0].weight_sum
    tolerance = (e_num + np.abs(g_secure) * e_den) / (w - e_den)
    assert np.all(np.abs(g_secure - g_plain) <= tolerance)
    assert np.max(np.abs(private.result.final_state.gamma - g_plain)) > 1e-3
    assert private.epsilon_spent is not None
    assert plain.epsilon_spent is None


def test_layout_bounds_pass_the_secagg_wraparound_check() -> None:
    data = tiny_dataset()
    for method in (Method.FEDMAP, Method.FEDAVG):
        cfg = SimulationConfig(method=method)
        cfg = dataclasses.replace(
            cfg, secagg=dataclasses.replace(cfg.secagg, max_colluding_sites=0)
        )
        agg = build_aggregator(cfg, data)
        assert isinstance(agg, SecureAggregator)
        from fedmap_secure.fedmap.methods import make_strategy

        layout = make_strategy(cfg).layout(n_theta=10, n_psi=5000, psi_grad_scale=5)
        assert layout is not None
        Quantizer.auto(layout, n_max=agg.config.n, bits=agg.config.bits)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epsilon", "1e-6"], "too small to run even"),
        (["--delta", "2"], "privacy.delta must be in (0, 1)"),
        (["--epsilon", "-1"], "privacy.epsilon must be finite and > 0"),
    ],
)
def test_privacy_errors_exit_2(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["simulate", "--dataset", "tiny", "--rounds", "2", "--out", str(tmp_path / "o")]
    (tmp_path / "c.toml").write_text(TINY_SECAGG)
    code, _ = _cli([*args, "--config", str(tmp_path / "c.toml"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_existing_site_state_is_refused(
    private_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (private_run.parent / "c.toml").write_text(TINY_SECAGG)
    args = ["simulate", "--dataset", "tiny", "--config", str(private_run.parent / "c.toml")]
    code, _ = _cli([*args, "--out", str(private_run)])
    assert code == 2
    assert "already exists" in capsys.readouterr().err


CRASH_SCRIPT = textwrap.dedent(
    """
    import dataclasses, os, signal, sys
    from pathlib import Path
    from fedmap_secure.config.schema import SimulationConfig
    from fedmap_secure.experiments.pipeline import run_private_simulation
    from tests.synthetic import tiny_dataset

    def crash(site, receipt):  # the charge is durable; nothing has been released yet
        os.kill(os.getpid(), signal.SIGKILL)

    base = SimulationConfig(rounds=2)
    cfg = dataclasses.replace(
        base, privacy=dataclasses.replace(base.privacy, steps_per_round=3),
        secagg=dataclasses.replace(base.secagg, max_colluding_sites=0),
    )
    run_private_simulation(cfg, tiny_dataset(), Path(sys.argv[1]), after_charge=crash)
    """
)


def test_crash_between_charge_and_send_keeps_the_charge(tmp_path: Path) -> None:
    out = tmp_path / "crashed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(out)], env=env, cwd=ROOT, timeout=120
    )
    assert proc.returncode == -9
    assert not (out / "summary.json").exists()
    report = load_report(out / "sites" / "a")
    assert [e.round_index for e in report.entries] == [0]
    assert report.epsilon_spent > 0
    assert load_report(out / "sites" / "b").entries == ()  # never reached


def test_noise_is_reproducible_only_when_asked(tmp_path: Path) -> None:
    data = tiny_dataset(seed=5)
    gammas = {}
    for name, reproducible in (("a", True), ("b", True), ("c", False)):
        cfg = dataclasses.replace(_config(reproducible_noise=reproducible), rounds=1)
        run = run_private_simulation(cfg, data, tmp_path / name, aggregator=PlainSum())
        assert run.result.final_state is not None
        gammas[name] = run.result.final_state.gamma
        assert run.privacy["differential_privacy"]["reproducible"] is reproducible
    np.testing.assert_array_equal(gammas["a"], gammas["b"])
    assert np.max(np.abs(gammas["a"] - gammas["c"])) > 1e-6


def test_site_state_keeps_one_ledger_per_site_across_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--site-state: the ledgers outlive the run; a run the remaining budget cannot cover is
    refused before any release (without it, each run's budget is fresh and says so)."""
    state = tmp_path / "state"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(FAST)
    args = ["simulate", "--dataset", "tiny", "--config", str(cfg), "--rounds", "1"]
    code, _ = _cli([*args, "--out", str(tmp_path / "r1"), "--site-state", str(state)])
    assert code == 0
    summary = json.loads((tmp_path / "r1" / "summary.json").read_text())
    dp = summary["privacy"]["differential_privacy"]
    assert dp["budget_scope"].startswith("across runs")
    assert dp["sites"]["a"]["ledger"] == str(state / "a")
    assert not (tmp_path / "r1" / "sites").exists()
    before = load_report(state / "a").entries
    assert [e.round_index for e in before] == [0]
    code, _ = _cli([*args, "--out", str(tmp_path / "r2"), "--site-state", str(state)])
    assert code == 2
    assert "budget is exhausted" in capsys.readouterr().err
    assert load_report(state / "a").entries == before  # the refused run charged nothing
    (tmp_path / "f").mkdir()
    fresh = json.loads((_simulate(tmp_path / "f", rounds=1) / "summary.json").read_text())
    assert fresh["privacy"]["differential_privacy"]["budget_scope"].startswith("per run")
