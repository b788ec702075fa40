"""SQLite ledger store: durability, reopen, crash between charge and send, integrity."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedmap_secure.errors import (
    BudgetExceededError,
    ConfigError,
    LedgerIntegrityError,
    LedgerMismatchError,
)
from fedmap_secure.privacy.accountants import AccountantName, create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import GaussianEvent, SubsampledGaussianEvent
from fedmap_secure.privacy.ledger_store import (
    LEDGER_FILENAME,
    SqliteLedgerStore,
    ledger_path,
    open_existing_ledger,
    open_site_ledger,
)

RDP = create_accountant(AccountantName.DP_ACCOUNTING_RDP)
BUDGET = Budget(epsilon=12.0, delta=1e-5)
ROUND = SubsampledGaussianEvent(noise_multiplier=1.2, sample_rate=0.05, steps=40)
OMEGA = GaussianEvent(noise_multiplier=20.0)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_durability_pragmas_and_file_location(tmp_path: Path) -> None:
    with open_site_ledger(tmp_path / "site-a", budget=BUDGET, accountant=RDP) as ledger:
        assert (tmp_path / "site-a" / LEDGER_FILENAME).exists()
        store = ledger._store
        assert isinstance(store, SqliteLedgerStore)
        assert store.pragmas() == {"journal_mode": "wal", "synchronous": 2}  # 2 = FULL


def test_reopen_shows_charge_and_recomputes(tmp_path: Path) -> None:
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP, now=lambda: "t0") as ledger:
        receipt = ledger.charge(3, [ROUND, OMEGA], note="round 3")
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as again:
        history = again.history()
        assert len(history) == 1
        entry = history[0]
        assert (entry.round_index, entry.note, entry.charged_at) == (3, "round 3", "t0")
        assert entry.events == (ROUND, OMEGA)
        assert again.spent() == receipt.epsilon_after


def test_over_budget_leaves_database_unchanged(tmp_path: Path) -> None:
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as ledger:
        ledger.charge(0, [ROUND], note="ok")
        before = _dump(ledger_path(tmp_path))
        greedy = SubsampledGaussianEvent(noise_multiplier=0.7, sample_rate=0.2, steps=500)
        with pytest.raises(BudgetExceededError):
            ledger.charge(1, [greedy], note="too much")
        assert _dump(ledger_path(tmp_path)) == before
        assert len(ledger.history()) == 1


def test_budget_mismatch_on_reopen_raises(tmp_path: Path) -> None:
    open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP).close()
    with pytest.raises(LedgerMismatchError, match=r"epsilon: stored 12\.0, configured 10\.0"):
        open_site_ledger(tmp_path, budget=Budget(epsilon=10.0, delta=1e-5), accountant=RDP)
    with pytest.raises(LedgerMismatchError, match="delta"):
        open_site_ledger(tmp_path, budget=Budget(epsilon=12.0, delta=1e-6), accountant=RDP)


def _charge_then_die(state_dir: Path, how: str) -> subprocess.CompletedProcess[str]:
    """A child 'site' charges a round, then dies before sending its release."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from fedmap_secure.privacy.accountants import create_accountant
        from fedmap_secure.privacy.budget import Budget
        from fedmap_secure.privacy.events import SubsampledGaussianEvent
        from fedmap_secure.privacy.ledger_store import open_site_ledger
        ledger = open_site_ledger(
            {str(state_dir)!r},
            budget=Budget(epsilon=12.0, delta=1e-5),
            accountant=create_accountant("dp-accounting-rdp"),
        )
        receipt = ledger.charge(
            0,
            [SubsampledGaussianEvent(noise_multiplier=1.2, sample_rate=0.05, steps=40)],
            note="about to send",
        )
        print(repr(receipt.epsilon_after), flush=True)
        if {how!r} == "exit":
            os._exit(17)
        os.kill(os.getpid(), signal.SIGKILL)
        print("SENT", flush=True)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_crash_between_charge_and_send_keeps_the_charge(tmp_path: Path, how: str) -> None:
    result = _charge_then_die(tmp_path, how)
    assert result.returncode == (17 if how == "exit" else -9), result.stderr
    assert "SENT" not in result.stdout
    charged = float(result.stdout.strip())
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as ledger:
        history = ledger.history()
        assert [e.note for e in history] == ["about to send"]
        # recomputed in another process: equal up to float rounding of the conversion
        assert ledger.spent() == pytest.approx(charged, rel=1e-9)
        assert ledger.spent() == RDP.epsilon([ROUND], 1e-5)


def test_corrupt_row_raises(tmp_path: Path) -> None:
    open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP).charge(0, [ROUND], note="x")
    conn = sqlite3.connect(ledger_path(tmp_path))
    conn.execute(
        "UPDATE charges SET events_json = ? WHERE sequence = 1",
        ('[{"type": "gaussian", "noise_multiplier": -1.0, "count": 1}]',),
    )
    conn.commit()
    conn.close()
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as ledger:
        with pytest.raises(LedgerIntegrityError, match="charge #1 is corrupt"):
            ledger.spent()
        with pytest.raises(LedgerIntegrityError):
            ledger.charge(1, [ROUND], note="must not be written on top of a corrupt ledger")


@pytest.mark.parametrize(
    "events_json", ["not json", "[]", '[{"type": "gaussian", "noise_multiplier": NaN, "count": 1}]']
)
def test_unparseable_rows_raise(tmp_path: Path, events_json: str) -> None:
    open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP).charge(0, [ROUND], note="x")
    conn = sqlite3.connect(ledger_path(tmp_path))
    conn.execute("UPDATE charges SET events_json = ?", (events_json,))
    conn.commit()
    conn.close()
    with (
        open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as ledger,
        pytest.raises(LedgerIntegrityError, match="corrupt"),
    ):
        ledger.history()


def test_deleted_charge_is_detected(tmp_path: Path) -> None:
    ledger = open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP)
    ledger.charge(0, [OMEGA], note="a")
    ledger.charge(1, [OMEGA], note="b")
    ledger.close()
    conn = sqlite3.connect(ledger_path(tmp_path))
    conn.execute("DELETE FROM charges WHERE sequence = 2")
    conn.commit()
    conn.close()
    with (
        open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as again,
        pytest.raises(LedgerIntegrityError, match="gaps"),
    ):
        again.spent()


def test_unknown_schema_and_foreign_files_raise(tmp_path: Path) -> None:
    open_site_ledger(tmp_path / "a", budget=BUDGET, accountant=RDP).close()
    conn = sqlite3.connect(ledger_path(tmp_path / "a"))
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerIntegrityError, match="schema version"):
        open_site_ledger(tmp_path / "a", budget=BUDGET, accountant=RDP)

    (tmp_path / "b").mkdir()
    ledger_path(tmp_path / "b").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerIntegrityError, match="not a readable database"):
        open_site_ledger(tmp_path / "b", budget=BUDGET, accountant=RDP)

    conn = sqlite3.connect(tmp_path / "other.sqlite3")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerIntegrityError, match="not a privacy ledger"):
        SqliteLedgerStore(tmp_path / "other.sqlite3")


def test_open_existing_uses_stored_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no privacy ledger"):
        open_existing_ledger(tmp_path)
    assert not ledger_path(tmp_path).exists()
    pld = create_accountant(AccountantName.DP_ACCOUNTING_PLD)
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=pld) as ledger:
        receipt = ledger.charge(0, [ROUND], note="x")
    with open_existing_ledger(tmp_path, with_cross_check=False) as existing:
        assert existing.budget == BUDGET
        assert existing.accountant.name == "dp-accounting-pld"
        # the charge composed incrementally; spent() recomposes: equal to the discretisation
        assert existing.spent() == pytest.approx(receipt.epsilon_after, abs=1e-6)


def test_each_site_has_its_own_ledger(tmp_path: Path) -> None:
    with (
        open_site_ledger(tmp_path / "s1", budget=BUDGET, accountant=RDP) as one,
        open_site_ledger(
            tmp_path / "s2", budget=Budget(epsilon=1e3, delta=1e-6), accountant=RDP
        ) as two,
    ):
        one.charge(0, [ROUND], note="")
        assert two.history() == []
        assert one.spent() > 0


def test_concurrent_processes_cannot_both_pass_the_check(tmp_path: Path) -> None:
    """Two processes race to charge a round that fits only once: exactly one succeeds."""
    one_round = RDP.epsilon([ROUND], 1e-5)
    budget_eps = (one_round + RDP.epsilon([ROUND, ROUND], 1e-5)) / 2
    open_site_ledger(
        tmp_path, budget=Budget(epsilon=budget_eps, delta=1e-5), accountant=RDP
    ).close()
    code = textwrap.dedent(
        f"""
        from fedmap_secure.errors import BudgetExceededError
        from fedmap_secure.privacy.accountants import create_accountant
        from fedmap_secure.privacy.budget import Budget
        from fedmap_secure.privacy.events import SubsampledGaussianEvent
        from fedmap_secure.privacy.ledger_store import open_site_ledger
        ledger = open_site_ledger(
            {str(tmp_path)!r},
            budget=Budget(epsilon={budget_eps!r}, delta=1e-5),
            accountant=create_accountant("dp-accounting-rdp"),
        )
        try:
            ledger.charge(0, [SubsampledGaussianEvent(
                noise_multiplier=1.2, sample_rate=0.05, steps=40)], note="race")
            print("CHARGED")
        except BudgetExceededError:
            print("DECLINED")
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert outputs == ["CHARGED", "DECLINED"]
    with open_existing_ledger(tmp_path, with_cross_check=False) as ledger:
        assert len(ledger.history()) == 1
        assert ledger.spent() <= budget_eps


def test_valid_looking_edit_breaks_the_hash_chain(tmp_path: Path) -> None:
    """An edit that still parses (fewer steps: an under-count) is caught by the chain."""
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as ledger:
        ledger.charge(0, [ROUND], note="a")
        ledger.charge(1, [OMEGA], note="b")
    fewer = SubsampledGaussianEvent(noise_multiplier=1.2, sample_rate=0.05, steps=4)
    conn = sqlite3.connect(ledger_path(tmp_path))
    conn.execute(
        "UPDATE charges SET events_json = ? WHERE sequence = 1",
        (json.dumps([fewer.to_json()], sort_keys=True),),
    )
    conn.commit()
    conn.close()
    with (
        open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as again,
        pytest.raises(LedgerIntegrityError, match="charge #1 does not match the ledger's hash"),
    ):
        again.spent()


def test_edited_settings_break_the_hash_chain(tmp_path: Path) -> None:
    with open_site_ledger(tmp_path, budget=BUDGET, accountant=RDP) as ledger:
        ledger.charge(0, [ROUND], note="a")
    conn = sqlite3.connect(ledger_path(tmp_path))
    (text,) = conn.execute("SELECT settings_json FROM ledger_settings").fetchone()
    conn.execute("UPDATE ledger_settings SET settings_json = ?", (text.replace("12.0", "30.0"),))
    conn.commit()
    conn.close()
    bigger = Budget(epsilon=30.0, delta=1e-5)
    with (
        open_site_ledger(tmp_path, budget=bigger, accountant=RDP) as again,
        pytest.raises(LedgerIntegrityError, match="hash chain"),
    ):
        again.charge(1, [ROUND], note="would spend a budget nobody set")
