"""A site's own privacy plan and its check-then-commit guard (in-memory ledger)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.privacy import OmegaRelease, PrivacyConfig, SiteBudgetOverride
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import BudgetExceededError, ConfigError
from fedmap_secure.privacy.accountants import create_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import GaussianEvent, SubsampledGaussianEvent
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.runtime.privacy import SitePrivacyGuard, plan_site_privacy, site_delta

PRIVACY = PrivacyConfig(epsilon=2.0, steps_per_round=4, expected_batch_size=16)


def _site(name: str = "h1", n: int = 80) -> SiteData:
    x = np.zeros((n, 2), dtype=np.float32)
    y = np.zeros(n, dtype=np.int64)
    return SiteData(name=name, tier=Tier.TRAIN, x_train=x, y_train=y, x_test=x, y_test=y)


def _ledger(budget: Budget) -> PrivacyLedger:
    return PrivacyLedger(MemoryLedgerStore(), budget, create_accountant("dp-accounting-pld"))


def test_plan_fits_the_budget_and_uses_the_sites_own_numbers() -> None:
    plan = plan_site_privacy(_site(n=80), PRIVACY, rounds=3)
    assert plan.sample_rate == pytest.approx(16 / 80)
    assert plan.budget.delta == 1e-5
    events = plan.round_events()
    assert events[0] == SubsampledGaussianEvent(
        noise_multiplier=plan.noise_multiplier, sample_rate=0.2, steps=4
    )
    assert isinstance(events[1], GaussianEvent)
    total = create_accountant("dp-accounting-pld").epsilon(events * 3, plan.budget.delta)
    assert 0.9 * 2.0 < total <= 2.0  # calibrated close to, never above, the budget


def test_delta_stays_well_below_one_over_n() -> None:
    assert site_delta(1e-3, 30) == 1e-3
    assert site_delta(1e-2, 30) == pytest.approx(1 / 300)


def test_uniform_omega_has_no_score_event_and_less_noise() -> None:
    gaussian = plan_site_privacy(_site(), PRIVACY, rounds=3)
    uniform = plan_site_privacy(
        _site(), dataclasses.replace(PRIVACY, omega_release=OmegaRelease.UNIFORM), rounds=3
    )
    assert len(uniform.round_events()) == 1
    assert uniform.omega_noise_multiplier is None
    assert uniform.noise_multiplier < gaussian.noise_multiplier


def test_guard_charges_each_round_then_declines_past_its_plan() -> None:
    privacy = dataclasses.replace(
        PRIVACY, site=(SiteBudgetOverride(site="h1", epsilon=1.0, planned_rounds=2),)
    )
    plan = plan_site_privacy(_site(), privacy, rounds=5)
    assert plan.planned_rounds == 2
    assert plan.budget.epsilon == 1.0
    seen: list[str] = []
    guard = SitePrivacyGuard(plan, _ledger(plan.budget), after_charge=lambda s, r: seen.append(s))
    assert [guard.admit(r) for r in range(4)] == [True, True, False, False]
    assert guard.declined_rounds == [2, 3]
    assert seen == ["h1", "h1"]
    assert [e.round_index for e in guard.ledger.history()] == [0, 1]
    assert guard.ledger.spent() <= 1.0


def test_too_small_budget_is_a_clear_error_naming_the_site() -> None:
    with pytest.raises(BudgetExceededError, match=r"site 'h1'.*too small"):
        plan_site_privacy(_site(), dataclasses.replace(PRIVACY, epsilon=1e-4), rounds=3)


def test_privacy_config_from_toml() -> None:
    config = parse_config(
        '[privacy]\nepsilon = 1.5\nomega_release = "uniform"\n'
        '[[privacy.site]]\nsite = "va"\nplanned_rounds = 3\n[secagg]\nbits = 48\n'
    )
    assert config.privacy.epsilon == 1.5
    assert config.privacy.omega_release is OmegaRelease.UNIFORM
    assert config.privacy.override_for("va") == SiteBudgetOverride(site="va", planned_rounds=3)
    assert config.secagg.bits == 48


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[privacy]\ndelta = 1.5\n", "privacy.delta"),
        ('[privacy]\naccountant = "magic"\n', "privacy.accountant must be one of"),
        ('[[privacy.site]]\nsite = "va"\nbudget = 1\n', "unknown key privacy.site[0].budget"),
        ("[[privacy.site]]\nplanned_rounds = 1\n", "privacy.site[0]"),
        ("[secagg]\ndropout_fraction = 1.0\n", "secagg.dropout_fraction"),
    ],
)
def test_bad_privacy_config_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text)
