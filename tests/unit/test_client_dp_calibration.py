"""Calibration of client-level noise: the budget, the worst case and the ring fit."""

from __future__ import annotations

import dataclasses
import math

import pytest

from fedmap_secure.client_dp.calibration import (
    ClientDpProblem,
    plan_client_dp,
    planned_epsilon,
    wrap_probability,
)
from fedmap_secure.client_dp.encoding import NoiseKind, rounded_l2_bound
from fedmap_secure.client_dp.rounds import noise_shares
from fedmap_secure.errors import ConfigError
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.secagg.config import SecAggConfig

BASE = ClientDpProblem(
    mechanism=NoiseKind.DISCRETE_GAUSSIAN,
    epsilon=4.0,
    delta=1e-3,
    rounds=20,
    l2_clip=math.sqrt(2.0),
    dimension=8192,
    max_summands=4,
    noise_shares=2,
    bits=64,
    beta=math.exp(-0.5),
    local_noise_std=65536.0,
    max_wrap_probability=1e-9,
)


@pytest.mark.parametrize("mechanism", list(NoiseKind))
@pytest.mark.parametrize("epsilon", [0.5, 4.0, 64.0])
def test_the_plan_spends_the_budget_and_no_more(mechanism: NoiseKind, epsilon: float) -> None:
    problem = dataclasses.replace(BASE, mechanism=mechanism, epsilon=epsilon)
    plan = plan_client_dp(problem)
    assert plan.epsilon <= epsilon
    assert plan.epsilon == pytest.approx(epsilon, rel=1e-4)
    composed = DpAccountingRdpAccountant().epsilon([plan.event(count=problem.rounds)], 1e-3)
    assert composed == pytest.approx(plan.epsilon, rel=1e-12)
    assert plan.wrap_probability <= problem.max_wrap_probability


def test_more_privacy_or_more_rounds_needs_more_noise() -> None:
    z = {e: plan_client_dp(dataclasses.replace(BASE, epsilon=e)).noise_multiplier for e in (1, 4)}
    assert z[1] > z[4]
    longer = plan_client_dp(dataclasses.replace(BASE, rounds=80)).noise_multiplier
    assert longer > z[4]


def test_the_sensitivity_is_the_rounded_bound_at_the_chosen_scale() -> None:
    plan = plan_client_dp(BASE)
    levels = BASE.l2_clip / plan.scale
    assert plan.l2_sensitivity == rounded_l2_bound(levels, BASE.dimension, BASE.beta)
    assert plan.l2_sensitivity > levels  # rounding can only inflate it
    assert plan.l1_sensitivity == pytest.approx(plan.l2_sensitivity * math.sqrt(BASE.dimension))
    # per-share integer noise is what was asked; the scale follows from the budget
    total = math.sqrt(BASE.noise_shares) * BASE.local_noise_std * plan.scale
    assert total == pytest.approx(plan.noise_multiplier * BASE.l2_clip)


def test_the_guarantee_is_computed_for_the_guaranteed_shares_only() -> None:
    plan = plan_client_dp(BASE)
    event = plan.event()
    assert event.noise_shares == 2  # not the 4 sites that may all contribute
    assert planned_epsilon(BASE, plan.noise_multiplier) == plan.epsilon


def test_noise_shares_follow_the_secagg_threat_model() -> None:
    cfg = SecAggConfig.for_threat_model(n=4, dropout_fraction=0.25, corrupt_fraction=0.25, bits=64)
    assert noise_shares(cfg) == cfg.t - 1
    honest = SecAggConfig.for_threat_model(n=5, dropout_fraction=0.2, corrupt_fraction=0.0, bits=64)
    assert noise_shares(honest) == honest.t


def test_a_ring_too_small_is_refused() -> None:
    with pytest.raises(ConfigError, match="wrap-around probability"):
        plan_client_dp(dataclasses.replace(BASE, bits=20))


def test_the_wrap_bound_grows_as_the_ring_shrinks() -> None:
    scale = plan_client_dp(BASE).scale
    bounds = [wrap_probability(dataclasses.replace(BASE, bits=b), scale) for b in (24, 22, 21, 20)]
    assert bounds == sorted(bounds)
    assert bounds[0] < 1e-9 < bounds[-1]


def test_an_unreachable_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="out of reach"):
        plan_client_dp(dataclasses.replace(BASE, epsilon=1e-7, rounds=1000))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"noise_shares": 0}, "honest noise share"),
        ({"noise_shares": 5}, "honest noise share"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"beta": 1.0}, "beta"),
        ({"bits": 4}, "bits"),
        ({"local_noise_std": float("nan")}, "local_noise_std"),
    ],
)
def test_invalid_problems_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(BASE, **change)  # type: ignore[arg-type]
