"""Ledger report: JSON for machines, rich Table for people, non-DP releases flagged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from fedmap_secure.privacy.accountants import AccountantName, create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import (
    ComposedEvent,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
)
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.privacy.ledger_store import load_report, open_existing_ledger, open_site_ledger
from fedmap_secure.privacy.report import REPORT_SCHEMA, build_report

ROUND = SubsampledGaussianEvent(noise_multiplier=1.2, sample_rate=0.05, steps=40)
OMEGA = GaussianEvent(noise_multiplier=20.0)
RDP = create_accountant(AccountantName.DP_ACCOUNTING_RDP)


def _render(ledger: PrivacyLedger) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(build_report(ledger).to_table())
    return console.export_text()


def test_json_report_per_round(tmp_path: Path) -> None:
    pld = create_accountant(AccountantName.DP_ACCOUNTING_PLD)
    with open_site_ledger(tmp_path, budget=Budget(epsilon=4.0, delta=1e-5), accountant=pld) as led:
        led.charge(0, [ComposedEvent(events=(ROUND, OMEGA))], note="round 0")
        last = led.charge(1, [ROUND, OMEGA], note="round 1")
    with open_existing_ledger(tmp_path) as ledger:
        report = ledger.report_json()
    assert load_report(tmp_path).to_json() == report
    json.dumps(report, allow_nan=False)  # strictly valid JSON
    assert report["schema"] == REPORT_SCHEMA
    assert report["budget"] == {"epsilon": 4.0, "delta": 1e-5, "allow_non_dp_releases": False}
    assert report["accountant"]["name"] == "dp-accounting-pld"
    assert report["epsilon_spent"] == pytest.approx(last.epsilon_after, abs=1e-4)
    assert report["remaining"] == 4.0 - report["epsilon_spent"]
    assert report["cross_check"]["accountant"]["name"] == "opacus-rdp"
    assert report["cross_check"]["epsilon"] >= report["epsilon_spent"]
    assert report["non_dp_releases"] == []
    assert "EXCEPT" not in report["guarantee"]
    rounds = report["entries"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[0]["mechanisms"] == [ROUND.to_json(), OMEGA.to_json()]
    assert rounds[0]["cumulative_epsilon"] < rounds[1]["cumulative_epsilon"]
    assert rounds[1]["cumulative_epsilon"] == last.epsilon_after


def test_table_shows_mechanisms_epsilon_and_remaining() -> None:
    ledger = PrivacyLedger(MemoryLedgerStore(), Budget(epsilon=6.0, delta=1e-5), RDP)
    receipt = ledger.charge(7, [ROUND, OMEGA], note="round seven")
    text = _render(ledger)
    assert "Poisson-subsampled Gaussian x40 steps" in text
    assert "noise multiplier 1.2, sample rate 0.05" in text
    assert "Gaussian x1 (noise multiplier 20)" in text
    # displayed epsilon is rounded up, remaining budget rounded down (never flattering)
    assert f"{math.ceil(receipt.epsilon_after * 1e4) / 1e4:.4f}" in text
    assert f"{math.floor((6.0 - receipt.epsilon_after) * 1e4) / 1e4:.4f}" in text
    assert "round seven" in text
    assert "delta 1e-05" in text


def test_non_dp_release_is_flagged_everywhere() -> None:
    budget = Budget(epsilon=6.0, delta=1e-5, allow_non_dp_releases=True)
    ledger = PrivacyLedger(MemoryLedgerStore(), budget, RDP)
    ledger.charge(0, [ROUND, NonPrivateRelease(description="clear accuracy counts")], note="")
    report = ledger.report_json()
    assert report["non_dp_releases"] == ["clear accuracy counts"]
    assert "EXCEPT 1 flagged non-DP release" in report["guarantee"]
    assert report["entries"][0]["non_dp_releases_so_far"] is True
    text = _render(ledger)
    assert "NON-DP release: clear accuracy counts" in text
    assert "FLAGGED: 1 non-DP release" in text


def test_empty_ledger_report() -> None:
    ledger = PrivacyLedger(MemoryLedgerStore(), Budget(epsilon=1.0, delta=1e-5), RDP)
    report = ledger.report_json()
    assert report["epsilon_spent"] == 0.0
    assert report["remaining"] == 1.0
    assert report["entries"] == []
    assert "Privacy ledger" in _render(ledger)
