"""PrivacyLedger logic over the in-memory store: check then commit, non-DP policy, history."""

from __future__ import annotations

import pytest

from fedmap_secure.errors import (
    BudgetExceededError,
    ConfigError,
    LedgerMismatchError,
    PrivacyError,
)
from fedmap_secure.privacy.accountants import AccountantName, create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import (
    ComposedEvent,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
)
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger

RDP = create_accountant(AccountantName.DP_ACCOUNTING_RDP)
ROUND = SubsampledGaussianEvent(noise_multiplier=1.2, sample_rate=0.05, steps=40)
OMEGA = GaussianEvent(noise_multiplier=20.0)


def _ledger(epsilon: float = 12.0, *, allow_non_dp: bool = False) -> PrivacyLedger:
    budget = Budget(epsilon=epsilon, delta=1e-5, allow_non_dp_releases=allow_non_dp)
    return PrivacyLedger(MemoryLedgerStore(now=lambda: "T"), budget, RDP)


def test_budget_validation() -> None:
    for bad in (
        {"epsilon": 0.0, "delta": 1e-5},
        {"epsilon": float("inf"), "delta": 1e-5},
        {"epsilon": float("nan"), "delta": 1e-5},
        {"epsilon": 1.0, "delta": 0.0},
        {"epsilon": 1.0, "delta": 1.0},
        {"epsilon": -1.0, "delta": 1e-5},
    ):
        with pytest.raises(ConfigError):
            Budget(**bad)  # type: ignore[arg-type]


def test_preview_writes_nothing_and_matches_charge() -> None:
    ledger = _ledger()
    preview = ledger.preview(0, [ROUND, OMEGA])
    assert ledger.history() == []
    assert ledger.spent() == 0.0
    receipt = ledger.charge(0, [ROUND, OMEGA], note="round 0")
    assert receipt.epsilon_after == preview
    assert receipt.sequence == 1
    assert receipt.remaining == pytest.approx(12.0 - preview)
    assert ledger.spent() == preview
    assert RDP.epsilon([ROUND, OMEGA], 1e-5) == preview


def test_charges_compose_and_history_recomputes() -> None:
    ledger = _ledger()
    first = ledger.charge(0, [ComposedEvent(events=(ROUND, OMEGA))], note="r0")
    second = ledger.charge(1, [ROUND, OMEGA], note="r1")
    assert second.epsilon_after > first.epsilon_after
    history = ledger.history()
    assert [e.round_index for e in history] == [0, 1]
    assert [e.epsilon_cumulative for e in history] == [first.epsilon_after, second.epsilon_after]
    assert history[1].remaining == pytest.approx(12.0 - second.epsilon_after)
    assert history[1].epsilon_at_charge == second.epsilon_after
    assert history[0].note == "r0"
    assert history[0].charged_at == "T"


def test_over_budget_raises_and_writes_nothing() -> None:
    ledger = _ledger(epsilon=6.0)
    ledger.charge(0, [ROUND], note="fits")
    before = ledger.history()
    greedy = SubsampledGaussianEvent(noise_multiplier=0.7, sample_rate=0.2, steps=500)
    with pytest.raises(BudgetExceededError, match="nothing charged"):
        ledger.charge(1, [greedy], note="too much")
    assert ledger.history() == before
    # preview still answers, so the site can say by how much it would overshoot
    assert ledger.preview(1, [greedy]) > 6.0


def test_non_dp_release_refused_unless_allowed() -> None:
    leak = NonPrivateRelease(description="test accuracy counts in the clear")
    strict = _ledger()
    with pytest.raises(PrivacyError, match="does not allow non-DP"):
        strict.charge(0, [ROUND, leak], note="x")
    with pytest.raises(PrivacyError, match="does not allow non-DP"):
        strict.preview(0, [leak])
    assert strict.history() == []

    lenient = _ledger(allow_non_dp=True)
    receipt = lenient.charge(0, [ROUND, leak], note="metrics opted in")
    assert receipt.non_dp_releases
    # excluded from composition (it has no finite epsilon), but never hidden
    assert receipt.epsilon_after == RDP.epsilon([ROUND], 1e-5)
    later = lenient.charge(1, [ROUND], note="dp only")
    assert later.non_dp_releases
    assert all(entry.non_dp_releases for entry in lenient.history())


def test_request_validation() -> None:
    ledger = _ledger()
    with pytest.raises(ConfigError, match="round_index"):
        ledger.charge(-1, [ROUND], note="")
    with pytest.raises(ConfigError, match="at least one event"):
        ledger.charge(0, [], note="")
    with pytest.raises(ConfigError, match="note"):
        ledger.charge(0, [ROUND], note="x" * 501)
    with pytest.raises(PrivacyError):
        ledger.charge(0, ["gaussian"], note="")  # type: ignore[list-item]


def test_budget_or_accountant_mismatch_on_shared_store() -> None:
    store = MemoryLedgerStore()
    PrivacyLedger(store, Budget(epsilon=2.0, delta=1e-5), RDP)
    with pytest.raises(LedgerMismatchError, match=r"epsilon: stored 2\.0, configured 4\.0"):
        PrivacyLedger(store, Budget(epsilon=4.0, delta=1e-5), RDP)
    with pytest.raises(LedgerMismatchError, match="delta"):
        PrivacyLedger(store, Budget(epsilon=2.0, delta=1e-6), RDP)
    with pytest.raises(LedgerMismatchError, match="allow_non_dp_releases"):
        PrivacyLedger(store, Budget(epsilon=2.0, delta=1e-5, allow_non_dp_releases=True), RDP)
    pld = create_accountant(AccountantName.DP_ACCOUNTING_PLD)
    with pytest.raises(LedgerMismatchError, match="accountant"):
        PrivacyLedger(store, Budget(epsilon=2.0, delta=1e-5), pld)
    PrivacyLedger(store, Budget(epsilon=2.0, delta=1e-5), RDP)  # same settings reopen fine


def test_cross_check_reports_rdp_beside_pld() -> None:
    pld = create_accountant(AccountantName.DP_ACCOUNTING_PLD)
    rdp = create_accountant(AccountantName.OPACUS_RDP)
    ledger = PrivacyLedger(
        MemoryLedgerStore(), Budget(epsilon=5.0, delta=1e-5), pld, cross_check=rdp
    )
    ledger.charge(0, [ROUND, OMEGA], note="")
    cross = ledger.cross_check_epsilon()
    assert cross is not None
    assert ledger.spent() <= cross
    assert _ledger().cross_check_epsilon() is None
