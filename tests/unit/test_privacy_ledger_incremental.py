"""Incremental accounting: one composition per charge, same figures as a full recomposition."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fedmap_secure.errors import BudgetExceededError, LedgerIntegrityError, LedgerMismatchError
from fedmap_secure.privacy.accountants import DpAccountingPldAccountant, create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import Event, GaussianEvent, SubsampledGaussianEvent
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.privacy.ledger_store import ledger_path, open_site_ledger
from fedmap_secure.privacy.noise_source import NoiseSource

ROUND: list[Event] = [
    SubsampledGaussianEvent(noise_multiplier=5.0, sample_rate=0.16, steps=10),
    GaussianEvent(noise_multiplier=38.6),
]


def test_charges_equal_a_full_recomposition_over_25_rounds() -> None:
    pld = DpAccountingPldAccountant()
    ledger = PrivacyLedger(MemoryLedgerStore(), Budget(epsilon=50.0, delta=1e-5), pld)
    for r in range(25):
        receipt = ledger.charge(r, ROUND, note=f"round {r}")
        full = pld.epsilon(ROUND * (r + 1), 1e-5)  # today's figure: every event recomposed
        # both are pessimistic PLD upper bounds; equal far below the 1e-3 discretisation
        assert receipt.epsilon_after == pytest.approx(full, abs=1e-4)
    assert ledger.spent() == pytest.approx(receipt.epsilon_after, abs=1e-4)
    history = ledger.history()
    assert [e.round_index for e in history] == list(range(25))
    assert history[-1].epsilon_cumulative == pytest.approx(receipt.epsilon_after, abs=1e-9)


def test_a_refused_charge_keeps_neither_the_row_nor_the_state() -> None:
    pld = DpAccountingPldAccountant()
    between = (pld.epsilon(ROUND, 1e-5) + pld.epsilon(ROUND * 2, 1e-5)) / 2
    ledger = PrivacyLedger(MemoryLedgerStore(), Budget(epsilon=between, delta=1e-5), pld)
    first = ledger.charge(0, ROUND, note="fits")
    with pytest.raises(BudgetExceededError):
        ledger.charge(1, ROUND, note="does not fit")
    assert len(ledger.history()) == 1
    # the kept state is still round 0's: a small release that fits is charged against it
    small = [GaussianEvent(noise_multiplier=200.0)]
    after = ledger.charge(1, small, note="small")
    assert after.epsilon_after == pytest.approx(pld.epsilon([*ROUND, *small], 1e-5), abs=1e-4)
    assert after.epsilon_after > first.epsilon_after


def test_charges_written_by_another_process_are_picked_up(tmp_path: Path) -> None:
    pld = create_accountant("dp-accounting-pld")
    budget = Budget(epsilon=20.0, delta=1e-5)
    mine = open_site_ledger(tmp_path, budget=budget, accountant=pld)
    other = open_site_ledger(tmp_path, budget=budget, accountant=pld)
    mine.charge(0, ROUND, note="a")
    other.charge(1, ROUND, note="b")  # the kept state of `mine` is now stale
    third = mine.charge(2, ROUND, note="c")
    assert third.epsilon_after == pytest.approx(pld.epsilon(ROUND * 3, 1e-5), abs=1e-4)
    mine.close()
    other.close()


def test_noise_source_is_bound_for_life(tmp_path: Path) -> None:
    pld = create_accountant("dp-accounting-pld")
    budget = Budget(epsilon=20.0, delta=1e-5)
    open_site_ledger(tmp_path, budget=budget, accountant=pld).close()
    with pytest.raises(LedgerMismatchError, match="noise_source"):
        open_site_ledger(tmp_path, budget=budget, accountant=pld, noise_source=NoiseSource.SEEDED)


def test_a_version_1_ledger_is_refused_not_reinterpreted(tmp_path: Path) -> None:
    pld = create_accountant("dp-accounting-pld")
    with open_site_ledger(tmp_path, budget=Budget(epsilon=20.0, delta=1e-5), accountant=pld) as x:
        x.charge(0, ROUND, note="a")
    with sqlite3.connect(ledger_path(tmp_path)) as db:
        db.execute("UPDATE schema_version SET version = 1")
        (text,) = db.execute("SELECT settings_json FROM ledger_settings").fetchone()
        old = {k: v for k, v in json.loads(text).items() if k not in {"adjacency", "noise_source"}}
        db.execute("UPDATE ledger_settings SET settings_json = ?", (json.dumps(old),))
    with pytest.raises(LedgerIntegrityError, match=r"version-1 ledger .* cannot be continued"):
        open_site_ledger(tmp_path, budget=Budget(epsilon=20.0, delta=1e-5), accountant=pld)


def test_an_open_store_reads_only_new_rows_and_still_catches_edits(tmp_path: Path) -> None:
    """Later loads check only the rows after the verified prefix; an edit of that prefix's
    last row or a deleted row sends the store back to the full check, which raises."""
    pld = create_accountant("dp-accounting-pld")
    budget = Budget(epsilon=20.0, delta=1e-5)
    mine = open_site_ledger(tmp_path, budget=budget, accountant=pld)
    other = open_site_ledger(tmp_path, budget=budget, accountant=pld)
    for r in range(3):
        mine.charge(r, ROUND, note=f"{r}")
    other.charge(3, ROUND, note="from another process")
    assert [e.note for e in mine.history()] == ["0", "1", "2", "from another process"]
    assert mine.spent() == pytest.approx(pld.epsilon(ROUND * 4, 1e-5), abs=1e-4)
    with sqlite3.connect(ledger_path(tmp_path)) as db:
        db.execute("UPDATE charges SET note = 'edited' WHERE sequence = 1")
    # the open store keeps accounting from the rows it verified; a fresh open checks all
    assert mine.history()[0].note == "0"
    with pytest.raises(LedgerIntegrityError, match="charge #1 does not match"):
        open_site_ledger(tmp_path, budget=budget, accountant=pld).spent()
    with sqlite3.connect(ledger_path(tmp_path)) as db:
        db.execute("UPDATE charges SET row_hash = 'x' WHERE sequence = 4")
    with pytest.raises(LedgerIntegrityError, match="charge #1 does not match"):
        mine.spent()
    with sqlite3.connect(ledger_path(tmp_path)) as db:
        db.execute("DELETE FROM charges WHERE sequence = 2")
    with pytest.raises(LedgerIntegrityError, match="gaps"):
        other.spent()
    mine.close()
    other.close()
