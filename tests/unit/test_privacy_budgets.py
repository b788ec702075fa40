"""Big and small budgets: an answer in seconds, one clear line, and warnings (issue 14 §5).

No timing is asserted here, only the outcome (the CLI's exit code and its one
line); calibration and charge costs are measured by benchmarks/bench_accounting.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.config.privacy import MAX_EPSILON, PrivacyConfig
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import BudgetExceededError, ConfigError
from fedmap_secure.privacy.accountants import (
    MIN_NOISE_MULTIPLIER,
    DpAccountingPldAccountant,
    calibrate_noise_multiplier,
)
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import GaussianEvent, SubsampledGaussianEvent
from fedmap_secure.runtime.privacy import plan_site_privacy
from tests.cli_runner import run_cli


def _site(n: int, classes: int = 2, name: str = "a") -> SiteData:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.arange(n) % classes).astype(np.int64)
    return SiteData(name=name, tier=Tier.TRAIN, x_train=x, y_train=y, x_test=x, y_test=y)


@pytest.mark.parametrize("epsilon", ["1e9", "1e5"])
def test_huge_budgets_are_refused_with_one_line(
    epsilon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["simulate", "--dataset", "tiny", "--epsilon", epsilon, "--rounds", "1"])
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in (text + err).splitlines() if line.strip()]
    assert len(lines) == 1, text + err
    assert f"above {MAX_EPSILON:g}" in lines[0]
    assert "--no-dp" in lines[0]


def test_the_largest_accepted_budget_calibrates_at_the_floor_or_above() -> None:
    plan = plan_site_privacy(_site(400), PrivacyConfig(epsilon=MAX_EPSILON), rounds=5)
    assert plan.noise_multiplier >= MIN_NOISE_MULTIPLIER
    assert plan.omega_noise_multiplier is not None
    assert plan.omega_noise_multiplier >= MIN_NOISE_MULTIPLIER  # never near-noiseless


def test_tiny_budget_warns_that_training_is_noise() -> None:
    plan = plan_site_privacy(_site(2000), PrivacyConfig(epsilon=0.01), rounds=20)
    assert any("unlikely to do better than chance" in w for w in plan.warnings)
    normal = plan_site_privacy(_site(2000), PrivacyConfig(epsilon=4.0), rounds=20)
    assert not any("chance" in w for w in normal.warnings)


def test_a_budget_too_small_for_the_plan_is_refused_with_the_site_named() -> None:
    with pytest.raises(BudgetExceededError, match=r"site 'a': budget epsilon 0\.001 is too small"):
        plan_site_privacy(_site(30), PrivacyConfig(epsilon=0.001), rounds=20)


def test_large_delta_is_replaced_and_said() -> None:
    plan = plan_site_privacy(_site(100), PrivacyConfig(epsilon=4.0, delta=0.5), rounds=3)
    assert plan.budget.delta == pytest.approx(1 / 1000)
    (note,) = [w for w in plan.warnings if "delta" in w]
    assert "delta 0.5" in note
    assert "0.001" in note
    assert plan.describe()["warnings"] == list(plan.warnings)


def test_single_class_site_is_warned() -> None:
    plan = plan_site_privacy(_site(120, classes=1), PrivacyConfig(epsilon=4.0), rounds=3)
    assert any("single class" in w for w in plan.warnings)


def test_calibration_is_on_the_feasible_side_after_few_evaluations() -> None:
    pld = DpAccountingPldAccountant()
    budget = Budget(epsilon=3.0, delta=1e-5)
    extra = [GaussianEvent(noise_multiplier=40.0, count=20)]
    sigma = calibrate_noise_multiplier(
        budget,
        sample_rate=0.2,
        steps_per_round=10,
        rounds=20,
        extra_events=extra,
        accountant=pld,
        relative_tolerance=0.01,
    )
    plan = SubsampledGaussianEvent(noise_multiplier=sigma, sample_rate=0.2, steps=200)
    assert pld.epsilon([*extra, plan], 1e-5) <= 3.0
    lower = SubsampledGaussianEvent(noise_multiplier=sigma * 0.985, sample_rate=0.2, steps=200)
    assert pld.epsilon([*extra, lower], 1e-5) > 3.0


def test_the_pld_adapter_refuses_near_noiseless_releases() -> None:
    pld = DpAccountingPldAccountant()
    assert not pld.supports(GaussianEvent(noise_multiplier=1e-6))
    with pytest.raises(Exception, match="does not support"):
        pld.epsilon([GaussianEvent(noise_multiplier=1e-6)], 1e-5)


def test_budget_config_refuses_nonsense_even_per_site() -> None:
    from fedmap_secure.config.privacy import SiteBudgetOverride

    with pytest.raises(ConfigError, match="above 100"):
        SiteBudgetOverride(site="a", epsilon=1e9)
    assert PrivacyConfig(enabled=False, epsilon=1e9).enabled is False  # --no-dp: no budget
