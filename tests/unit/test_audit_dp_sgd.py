"""End-to-end one-run audit of the real DpSgdMapTrainer (small: ~1 s per training run).

Setting: 60 base records with 5 features, 1000 Dirac canaries (each included
with probability 1/2), logistic regression, full-batch Poisson sampling (q = 1),
2 steps, clipping C = 1, delta = 1e-5, 95% confidence. The claims come from the
site's default accountant (dp-accounting PLD) for the noise it was *told*.
Checked locally on seeds 10-19: correct noise gives lower bounds 0.10-0.45
(claim 1.0) and 0.92-1.23 (claim 2.94); both bugs give 4.68 on every seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.experiments.audit import (
    AuditConfig,
    AuditReport,
    canary_scores,
    claimed_epsilon,
    make_canaries,
    run_audit,
)
from fedmap_secure.privacy.accountants import DpAccountingPldAccountant, calibrate_noise_multiplier
from fedmap_secure.privacy.adjacency import Adjacency
from fedmap_secure.privacy.audit import AuditMethod
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.training.dp_config import DpSgdConfig, InnerOptimizer
from fedmap_secure.training.dp_training import DpSgdMapTrainer

STEPS = 2
DELTA = 1e-5


@pytest.fixture(scope="module")
def base() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def sigma_for_eps1() -> float:
    budget = Budget(epsilon=1.0, delta=DELTA)
    # the canary game is add/remove-one: calibrate (and claim) under that adjacency
    add_remove = DpAccountingPldAccountant(adjacency=Adjacency.ADD_REMOVE_ONE)
    return calibrate_noise_multiplier(
        budget, sample_rate=1.0, steps_per_round=STEPS, rounds=1, accountant=add_remove
    )


def _audit(
    base: tuple[np.ndarray, np.ndarray],
    *,
    actual_noise: float,
    told_noise: float,
    seed: int = 11,
    optimizer: InnerOptimizer = InnerOptimizer.SGD,
) -> AuditReport:
    dp = DpSgdConfig(
        noise_multiplier=actual_noise,
        max_grad_norm=1.0,
        sample_rate=1.0,
        steps=STEPS,
        optimizer=optimizer,
        learning_rate=1.0 if optimizer is InnerOptimizer.SGD else 0.1,
        reproducible_seed=seed,
    )
    claim = claimed_epsilon(noise_multiplier=told_noise, sample_rate=1.0, steps=STEPS, delta=DELTA)
    return run_audit(
        lambda: DpSgdMapTrainer(dp),
        x=base[0],
        y=base[1],
        claimed_epsilon=claim,
        config=AuditConfig(n_canaries=1000, delta=DELTA, seed=seed),
    )


def test_correctly_noised_training_stays_below_the_claim(
    base: tuple[np.ndarray, np.ndarray], sigma_for_eps1: float
) -> None:
    tight = _audit(base, actual_noise=sigma_for_eps1, told_noise=sigma_for_eps1)
    assert tight.claimed_epsilon == pytest.approx(1.0, abs=1e-2)
    assert not tight.refuted
    assert tight.result.epsilon_lower_bound <= tight.claimed_epsilon
    looser = _audit(base, actual_noise=2.0, told_noise=2.0)
    assert not looser.refuted
    # The audit has power: it proves a positive epsilon, just not above the claim.
    assert 0.3 < looser.result.epsilon_lower_bound < looser.claimed_epsilon


def test_noise_switched_off_is_flagged(
    base: tuple[np.ndarray, np.ndarray], sigma_for_eps1: float
) -> None:
    report = _audit(base, actual_noise=0.0, told_noise=sigma_for_eps1)
    assert report.claimed_epsilon <= 1.0
    assert report.refuted
    assert report.result.epsilon_lower_bound > 4.0
    assert report.result.correct == report.result.guesses  # perfect membership inference


def test_noise_far_below_the_claim_is_flagged_with_adam(
    base: tuple[np.ndarray, np.ndarray],
) -> None:
    # The product's default inner optimizer: noise 0.05 while the accountant was told 2.0.
    report = _audit(base, actual_noise=0.05, told_noise=2.0, optimizer=InnerOptimizer.ADAM)
    assert report.claimed_epsilon == pytest.approx(2.94, abs=0.02)
    assert report.refuted
    assert report.result.epsilon_lower_bound > 4.0
    described = report.describe()
    assert described["refuted"] is True
    assert described["canaries"] == 1000
    assert described["included"] == int(report.included.sum())


def test_non_dp_mode_has_no_finite_claim() -> None:
    assert claimed_epsilon(noise_multiplier=0.0, sample_rate=1.0, steps=3, delta=DELTA) == math.inf


# --- driver pieces ------------------------------------------------------------------------


def test_canary_scores_are_net_margin_changes() -> None:
    initial = torch.nn.Linear(3, 2)
    trained = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for layer in (initial, trained):
            layer.weight.zero_()
            layer.bias.zero_()
        trained.weight[1, 2] = 0.5  # class 1 logit grows along feature 2
        trained.bias[:] = torch.tensor([0.0, 3.0])  # a shared shift the score must ignore
    x = np.array([[0, 0, 2.0], [0, 0, 2.0], [1.0, 0, 0]], dtype=np.float32)
    y = np.array([1, 0, 1], dtype=np.int64)
    assert canary_scores(initial, trained, x, y).tolist() == pytest.approx([1.0, -1.0, 0.0])


def test_audit_config_refusals() -> None:
    with pytest.raises(ConfigError, match="n_canaries"):
        AuditConfig(n_canaries=1)
    with pytest.raises(ConfigError, match="delta"):
        AuditConfig(n_canaries=1000, delta=1e-3)
    with pytest.raises(ConfigError, match="fractions"):
        AuditConfig(guess_fractions=(0.0,))
    with pytest.raises(ConfigError, match="canary_scale"):
        AuditConfig(canary_scale=float("inf"))


def test_run_audit_refuses_bad_base_data(base: tuple[np.ndarray, np.ndarray]) -> None:
    def never() -> DpSgdMapTrainer:
        raise AssertionError("no training on refused data")

    x, y = base
    with pytest.raises(DataError, match="n_classes"):
        run_audit(never, x=x, y=np.zeros(60, np.int64), claimed_epsilon=1.0, config=AuditConfig())
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        run_audit(never, x=bad, y=y, claimed_epsilon=1.0, config=AuditConfig())


def test_dirac_canaries_own_one_coordinate_each() -> None:
    c = make_canaries(4, 3, 2, 7.5, np.random.default_rng(0))
    assert c.x.shape == (4, 7)
    assert np.all(c.x[:, :3] == 0.0)
    assert np.array_equal(c.x[:, 3:], 7.5 * np.eye(4, dtype=np.float32))
    assert set(c.y.tolist()) <= {0, 1}


def test_seeded_audit_is_reproducible_and_threshold_method_runs(
    base: tuple[np.ndarray, np.ndarray],
) -> None:
    first = _audit(base, actual_noise=2.0, told_noise=2.0, seed=3)
    again = _audit(base, actual_noise=2.0, told_noise=2.0, seed=3)
    assert np.array_equal(first.included, again.included)
    assert np.array_equal(first.scores, again.scores)
    assert first.result == again.result
    dp = DpSgdConfig(noise_multiplier=0.0, max_grad_norm=1.0, sample_rate=1.0, steps=STEPS)
    config = AuditConfig(n_canaries=400, method=AuditMethod.THRESHOLD, seed=5)
    report = run_audit(
        lambda: DpSgdMapTrainer(dp), x=base[0], y=base[1], claimed_epsilon=1.0, config=config
    )
    assert report.result.method is AuditMethod.THRESHOLD
    assert report.refuted
