"""``fedmap-secure report RUN_DIR``: one run's report, curves, per-site table, epsilon."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.report import METRICS_COLUMNS
from fedmap_secure.experiments.run_report import build_run_report, curves, ledger_epsilons
from fedmap_secure.experiments.sweep.cli import report_main
from fedmap_secure.privacy.accountants import AccountantName, create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import SubsampledGaussianEvent
from fedmap_secure.privacy.ledger_store import open_site_ledger

PNG = b"\x89PNG\r\n\x1a\n"
SITES = ("a", "b")


def _site(name: str, ba: float) -> dict[str, Any]:
    metrics = {"accuracy": 0.9, "balanced_accuracy": ba, "roc_auc": 0.8}
    return {
        "site": name,
        "tier": "train",
        "n_train": 10,
        "n_test": 5,
        "personalised": metrics,
        "global": metrics,
        "epsilon_spent": None,
    }


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    summary = {
        "dataset": "heart",
        "method": "fedmap",
        "rounds": 3,
        "seed": 0,
        "wall_seconds": 1.0,
        "sites": [_site("a", 0.75), _site("b", 0.5)],
        "mean_personalised_balanced_accuracy": 0.625,
        "worst_site_personalised_balanced_accuracy": 0.5,
        "warnings": ["site 'b': balanced accuracy at chance"],
    }
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    with (run / "metrics.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        for r in range(3):
            for i, site in enumerate(SITES):
                row: dict[str, object] = dict.fromkeys(METRICS_COLUMNS, "")
                row.update(
                    round=r, phase="train", site=site, tier="train", train_loss=1.0 / (r + 1),
                    personalised_balanced_accuracy=0.5 + 0.1 * r * (1 - i), omega=0.5,
                )  # fmt: skip
                writer.writerow(row)
    return run


def test_run_report_tables_and_plots_without_ledger(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    text = build_run_report(run).read_text(encoding="utf-8")
    assert "| personalised | 0.625 | 0.500 |" in text  # mean BA, worst BA lead
    assert "| a | train | 10 | 5 | 0.750 | 0.800 | 0.900 |" in text
    assert "**Warning:** site 'b'" in text
    assert "No privacy ledger" in text
    for name in ("plot_curves", "plot_run_sites"):
        assert (run / f"{name}.png").read_bytes()[:8] == PNG
    assert not (run / "plot_epsilon.png").exists()


def test_curves_keep_round_order_per_site(tmp_path: Path) -> None:
    rows = [
        {"round": "1", "phase": "train", "site": "a", "omega": "0.2"},
        {"round": "0", "phase": "train", "site": "a", "omega": "0.1"},
        {"round": "0", "phase": "finetune", "site": "c", "omega": "0.9"},
        {"round": "0", "phase": "train", "site": "b", "omega": ""},
    ]
    assert curves(rows, "omega") == {"a": [(0, 0.1), (1, 0.2)]}


def test_epsilon_over_rounds_from_site_ledgers(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    accountant = create_accountant(AccountantName.DP_ACCOUNTING_RDP)
    event = SubsampledGaussianEvent(noise_multiplier=1.2, sample_rate=0.1, steps=10)
    with open_site_ledger(
        run / "sites" / "a", budget=Budget(epsilon=50.0, delta=1e-5), accountant=accountant
    ) as ledger:
        for r in range(3):
            ledger.charge(r, [event], note=f"round {r}")
    spent = ledger_epsilons(run)
    assert list(spent) == ["a"]
    eps = [p.epsilon for p in spent["a"]]
    assert [p.round_index for p in spent["a"]] == [0, 1, 2]
    assert eps[0] < eps[1] < eps[2]
    assert report_main([str(run)]) == 0
    assert (run / "plot_epsilon.png").read_bytes()[:8] == PNG
    assert "| a | " in (run / "report.md").read_text(encoding="utf-8")


def test_report_of_a_run_refuses_epsilon_and_non_runs(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    assert report_main([str(run), "--epsilon", "1"]) == 2
    with pytest.raises(ConfigError, match="not a run directory"):
        build_run_report(tmp_path / "missing")
