"""Client-level events, their zCDP parameters, and how ledgers and accountants treat them.

Golden values: the DDG and Skellam papers give their privacy figures as plots,
not tables, so the formulas are pinned by hand-computed values, by the
continuous-Gaussian limit (dp-accounting's own Gaussian mechanism) and by the
Bun-Steinke zCDP conversion bound.
"""

from __future__ import annotations

import math

import dp_accounting
import pytest

from fedmap_secure.errors import (
    InvalidMechanismError,
    PrivacyError,
    UnsupportedMechanismError,
)
from fedmap_secure.privacy.accountants import AccountantName, create_accountant
from fedmap_secure.privacy.adjacency import Adjacency
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.events import (
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    GaussianEvent,
    PrivacyUnit,
    event_from_json,
)
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.privacy.report import build_report

RDP = DpAccountingRdpAccountant()
ZERO_OUT_GAUSSIAN = DpAccountingRdpAccountant(adjacency=Adjacency.ADD_REMOVE_ONE)
"""The Gaussian reference for zero-out (client-level) adjacency: the sum moves by the
sensitivity, exactly as in add/remove-one (no replace-one conversion)."""


def _ddg(**overrides: float) -> DistributedDiscreteGaussianEvent:
    values: dict[str, float] = {
        "l2_sensitivity": 1000.0,
        "l1_sensitivity": 1000.0 * math.sqrt(1024),
        "local_noise_std": 2000.0,
        "noise_shares": 3,
        "dimension": 1024,
        "count": 1,
    }
    values.update(overrides)
    return DistributedDiscreteGaussianEvent(**values)  # type: ignore[arg-type]


def test_tau_matches_a_hand_computed_value() -> None:
    # n = 2 shares of std 1/2: tau = 10 exp(-2 pi^2 (1/4) (1/2)) = 10 exp(-pi^2 / 4).
    event = _ddg(local_noise_std=0.5, noise_shares=2, l2_sensitivity=1.0, l1_sensitivity=1.0)
    assert event.tau() == pytest.approx(0.848049, abs=1e-6)
    rho, xi = event.zcdp()
    a = 1.0 / math.sqrt(2 * 0.25)
    assert rho == pytest.approx(0.5 * (a * a + 2 * a * event.tau() + event.tau() ** 2 * 1024))
    assert xi == 0.0


def test_one_share_is_exactly_a_discrete_gaussian() -> None:
    assert _ddg(noise_shares=1).tau() == 0.0


@pytest.mark.parametrize("rounds", [1, 20, 400])
def test_ddg_with_wide_noise_equals_the_gaussian_mechanism(rounds: int) -> None:
    event = _ddg(count=rounds)
    assert event.tau() < 1e-300
    z = math.sqrt(3) * 2000.0 / 1000.0  # total noise std / L2 sensitivity
    gaussian = ZERO_OUT_GAUSSIAN.epsilon([GaussianEvent(noise_multiplier=z, count=rounds)], 1e-5)
    assert RDP.epsilon([event], 1e-5) == pytest.approx(gaussian, rel=1e-9)


def test_skellam_tends_to_the_gaussian_mechanism_for_large_variance() -> None:
    skellam = DistributedSkellamEvent(
        l2_sensitivity=1e4,
        l1_sensitivity=1e4 * 64,
        local_noise_std=2e4,
        noise_shares=3,
        dimension=4096,
        count=20,
    )
    gaussian = GaussianEvent(noise_multiplier=math.sqrt(3) * 2.0, count=20)
    reference = ZERO_OUT_GAUSSIAN.epsilon([gaussian], 1e-5)
    assert RDP.epsilon([skellam], 1e-5) == pytest.approx(reference, rel=1e-3)
    assert RDP.epsilon([skellam], 1e-5) >= reference


def test_skellam_zcdp_matches_the_theorem_by_hand() -> None:
    e = DistributedSkellamEvent(
        l2_sensitivity=3.0, l1_sensitivity=9.0, local_noise_std=2.0, noise_shares=2, dimension=16
    )
    v = 8.0
    rho, xi = e.zcdp()
    assert rho == pytest.approx(9 / (2 * v) + 9 / (2 * v * v))
    assert xi == pytest.approx((6 * 9 - 9) / (4 * v * v))


@pytest.mark.parametrize("event", [_ddg(count=50), _ddg(local_noise_std=300.0, count=5)])
def test_epsilon_is_within_the_bun_steinke_conversion(
    event: DistributedDiscreteGaussianEvent,
) -> None:
    rho = event.zcdp()[0] * event.count
    delta = 1e-5
    assert RDP.epsilon([event], delta) <= rho + 2 * math.sqrt(rho * math.log(1 / delta)) + 1e-9


def test_the_library_receives_a_zcdp_event() -> None:
    event = _ddg(count=7)
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.ZCDpEvent(*event.zcdp()), 7))
    assert RDP.epsilon([event], 1e-5) == pytest.approx(acc.get_epsilon(1e-5))


@pytest.mark.parametrize(
    "name", [AccountantName.OPACUS_RDP, AccountantName.OPACUS_PRV, AccountantName.DP_ACCOUNTING_PLD]
)
def test_record_level_accountants_refuse_client_level_events(name: AccountantName) -> None:
    with pytest.raises(UnsupportedMechanismError, match="client-level"):
        create_accountant(name).epsilon([_ddg()], 1e-5)


def test_json_round_trip_and_validation() -> None:
    for event in (
        _ddg(count=3),
        DistributedSkellamEvent(
            l2_sensitivity=2.0, l1_sensitivity=4.0, local_noise_std=1.5, noise_shares=2, dimension=4
        ),
    ):
        assert event_from_json(event.to_json()) == event
    with pytest.raises(InvalidMechanismError):
        _ddg(l1_sensitivity=1.0)  # l1 below l2
    with pytest.raises(InvalidMechanismError):
        _ddg(noise_shares=0)
    with pytest.raises(InvalidMechanismError):
        event_from_json({**_ddg().to_json(), "extra": 1})


def _client_ledger(epsilon: float = 4.0) -> PrivacyLedger:
    return PrivacyLedger(MemoryLedgerStore(), Budget(epsilon=epsilon, delta=1e-3), RDP)


def test_a_ledger_never_mixes_record_and_client_level_events() -> None:
    ledger = _client_ledger()
    ledger.charge(0, [_ddg()], note="client round 0")
    with pytest.raises(PrivacyError, match="cannot share one ledger"):
        ledger.charge(1, [GaussianEvent(noise_multiplier=5.0)], note="record")
    assert len(ledger.history()) == 1
    assert ledger.unit is PrivacyUnit.CLIENT


def test_client_level_report_says_so() -> None:
    ledger = _client_ledger()
    ledger.charge(0, [_ddg()], note="client round 0")
    report = build_report(ledger)
    assert report.guarantee.startswith("CLIENT-LEVEL")
    assert "participating sites is visible" in report.guarantee
    assert report.to_json()["unit"] == "client"
    assert report.accountant["adjacency"].startswith("zero-out")
    assert report.cross_check is None


def test_the_budget_is_enforced_for_client_level_rounds() -> None:
    event = _ddg(local_noise_std=400.0)
    two = RDP.epsilon([event, event], 1e-3)
    ledger = _client_ledger(epsilon=two * 1.001)
    ledger.charge(0, [event], note="r0")
    ledger.charge(1, [event], note="r1")
    with pytest.raises(PrivacyError, match="budget"):
        ledger.charge(2, [event], note="r2")
    assert len(ledger.history()) == 2
