"""Audit statistics: one-run (Steinke et al. 2023) and threshold (Jagielski et al. 2020)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.privacy.audit import (
    AuditMethod,
    AuditResult,
    clopper_pearson_upper,
    draw_inclusion,
    guesses_from_scores,
    one_run_audit,
    one_run_audit_best,
    one_run_epsilon_lower_bound,
    one_run_p_value,
    symmetric_candidates,
    threshold_audit,
    threshold_epsilon_lower_bound,
)


def _bound(r: int, v: int, *, delta: float = 0.0, m: int = 1000, conf: float = 0.95) -> float:
    return one_run_epsilon_lower_bound(
        canaries=m, guesses=r, correct=v, delta=delta, confidence=conf
    )


def _reference_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The theorem's right-hand side by exact rational sums (independent of scipy)."""
    q = Fraction(math.exp(eps)) / (1 + Fraction(math.exp(eps)))

    def tail(u: int) -> Fraction:
        return sum(
            (math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(max(u, 0), r + 1)),
            Fraction(0),
        )

    alpha = max(((tail(v - i) - tail(v)) / i for i in range(1, v + 1)), default=Fraction(0))
    return min(1.0, float(tail(v) + 2 * m * Fraction(delta) * alpha))


# --- pinned values -----------------------------------------------------------------------


def test_all_correct_pure_bound_matches_closed_form() -> None:
    # delta = 0, v = r: P[Bin(r, q) >= r] = q^r <= beta  <=>  q >= beta^(1/r), eps = logit(q).
    for r in (10, 100, 1000):
        q = 0.05 ** (1.0 / r)
        assert _bound(r, r) == pytest.approx(math.log(q / (1.0 - q)), abs=2e-6)
    assert _bound(1000, 1000) == pytest.approx(5.80907, abs=1e-4)


@pytest.mark.parametrize(
    ("r", "v", "eps", "delta"),
    [(20, 15, 0.5, 0.0), (20, 18, 1.0, 1e-4), (40, 30, 0.3, 1e-3), (12, 12, 2.0, 1e-4)],
)
def test_p_value_matches_exact_rational_computation(
    r: int, v: int, eps: float, delta: float
) -> None:
    got = one_run_p_value(canaries=100, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(_reference_p_value(100, r, v, eps, delta), rel=1e-9)


def test_p_value_at_zero_epsilon_is_the_fair_coin_tail() -> None:
    p = one_run_p_value(canaries=50, guesses=10, correct=8, epsilon=0.0, delta=0.0)
    assert p == pytest.approx(sum(math.comb(10, j) for j in range(8, 11)) / 2**10)


def test_clopper_pearson_zero_successes_closed_form() -> None:
    # k = 0: the upper bound solves (1 - p)^n = alpha.
    assert clopper_pearson_upper(0, 50, 0.025) == pytest.approx(1 - 0.025 ** (1 / 50))
    assert clopper_pearson_upper(7, 7, 0.05) == 1.0


def test_threshold_bound_perfect_separation_closed_form() -> None:
    n, delta = 400, 1e-5
    u = 1 - 0.025 ** (1 / n)
    got = threshold_epsilon_lower_bound(
        false_positives=0, negatives=n, false_negatives=0, positives=n, delta=delta
    )
    assert got == pytest.approx(math.log((1 - delta - u) / u))


# --- shape of the bound ---------------------------------------------------------------------


def test_all_correct_bound_grows_with_number_of_guesses() -> None:
    bounds = [_bound(r, r) for r in (5, 20, 100, 500, 1000)]
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert bounds[0] < 0.5  # five right guesses prove little


def test_coin_flip_guesses_give_zero() -> None:
    assert _bound(1000, 500) == 0.0
    assert _bound(1000, 480) == 0.0
    assert _bound(1000, 520) < 0.05


def test_bound_monotone_in_correct_count_and_confidence() -> None:
    by_v = [_bound(200, v) for v in range(100, 201, 10)]
    assert all(a <= b for a, b in itertools.pairwise(by_v))
    assert by_v[-1] > by_v[0]
    assert _bound(200, 180, conf=0.99) < _bound(200, 180, conf=0.95) < _bound(200, 180, conf=0.8)


def test_delta_only_weakens_the_bound() -> None:
    pure = _bound(500, 450)
    assert _bound(500, 450, delta=1e-6) <= pure
    assert _bound(500, 450, delta=1e-4) < _bound(500, 450, delta=1e-6)


def test_returned_bound_passes_its_own_test() -> None:
    eps = _bound(300, 260, delta=1e-5)
    p = one_run_p_value(canaries=1000, guesses=300, correct=260, epsilon=eps, delta=1e-5)
    assert p <= 0.05
    p_above = one_run_p_value(
        canaries=1000, guesses=300, correct=260, epsilon=eps + 1e-4, delta=1e-5
    )
    assert p_above > 0.05


def test_bound_is_valid_for_randomised_response() -> None:
    # eps-randomised response attains the theorem's binomial exactly: the bound may
    # exceed the true eps in at most ~5% of audits.
    rng = np.random.default_rng(7)
    eps, r, trials = 1.0, 200, 120
    correct = rng.binomial(r, math.exp(eps) / (1 + math.exp(eps)), size=trials)
    exceed = sum(_bound(r, int(v), m=r) > eps for v in correct)
    assert exceed <= 12  # expected <= 6; 12 is > 3 sd above
    assert np.mean([_bound(r, int(v), m=r) for v in correct[:20]]) > 0.3  # and it has power


# --- guesses and audits from scores -----------------------------------------------------


def test_guesses_take_extremes_and_abstain_in_between() -> None:
    g = guesses_from_scores([0.3, -2.0, 5.0, 0.1, 4.0, -1.0], k_plus=2, k_minus=1)
    assert g.tolist() == [0, -1, 1, 0, 1, 0]
    assert guesses_from_scores([1.0, 2.0], k_plus=0, k_minus=0).tolist() == [0, 0]
    with pytest.raises(ConfigError, match="k_plus"):
        guesses_from_scores([1.0, 2.0], k_plus=2, k_minus=1)


def test_one_run_audit_counts_correct_guesses() -> None:
    scores = np.array([9.0, 8.0, 7.0, 1.0, 0.5, 0.0])
    included = np.array([True, True, False, False, False, True])
    res = one_run_audit(scores, included, k_plus=3, k_minus=2, delta=0.0)
    assert (res.guesses, res.correct, res.k_plus, res.k_minus) == (5, 3, 3, 2)
    assert res.method is AuditMethod.ONE_RUN
    assert res.canaries == 6


def test_perfect_separation_audit_and_bonferroni_best() -> None:
    rng = np.random.default_rng(1)
    included = draw_inclusion(800, rng)
    scores = np.where(included, 5.0, 0.0) + rng.normal(0, 0.1, 800)
    cands = symmetric_candidates(800, (0.1, 0.5, 1.0))
    best = one_run_audit_best(scores, included, candidates=cands, delta=1e-5)
    singles = [
        one_run_audit(scores, included, k_plus=a, k_minus=b, delta=1e-5, confidence=1 - 0.05 / 3)
        for a, b in cands
    ]
    assert best.epsilon_lower_bound == max(s.epsilon_lower_bound for s in singles)
    assert best.confidence == 0.95
    assert best.epsilon_lower_bound > 4.0
    noise_only = one_run_audit_best(rng.normal(0, 1, 800), included, candidates=cands, delta=1e-5)
    assert noise_only.epsilon_lower_bound < 0.5


def test_threshold_audit_separates_and_reports_counts() -> None:
    included = np.array([True] * 300 + [False] * 300)
    scores = np.where(included, 1.0, -1.0)
    res = threshold_audit(scores, included, thresholds=[0.0, 2.0], delta=1e-5)
    assert res.method is AuditMethod.THRESHOLD
    assert (res.correct, res.k_plus) == (600, 300)
    assert res.epsilon_lower_bound > 3.5
    flat = threshold_audit(np.zeros(600), included, thresholds=[0.0], delta=1e-5)
    assert flat.epsilon_lower_bound == 0.0


# --- inclusion bits ------------------------------------------------------------------------


def test_draw_inclusion_seeded_and_injected_bytes() -> None:
    a = draw_inclusion(1000, np.random.default_rng(3))
    assert np.array_equal(a, draw_inclusion(1000, np.random.default_rng(3)))
    assert 400 < a.sum() < 600
    bits = draw_inclusion(10, random_bytes=lambda n: bytes([0b10100000, 0b11000000][:n]))
    assert bits.tolist() == [True, False, True, False, False, False, False, False, True, True]
    assert draw_inclusion(10_000).dtype == np.bool_
    with pytest.raises(ConfigError, match="n_canaries"):
        draw_inclusion(0)


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"canaries": 10, "guesses": 5, "correct": 6}, "correct"),
        ({"canaries": 4, "guesses": 5, "correct": 5}, "guesses"),
        ({"canaries": 10_000, "guesses": 5, "correct": 5, "delta": 1e-4}, "vacuous"),
        ({"canaries": 10, "guesses": 5, "correct": 5, "delta": float("nan")}, "delta"),
        ({"canaries": 10, "guesses": 5, "correct": 5, "epsilon": -1.0}, "epsilon"),
        ({"canaries": 10, "guesses": 5, "correct": True}, "int"),
    ],
)
def test_p_value_refuses_invalid_input(kwargs: dict[str, float], match: str) -> None:
    args: dict[str, float] = {"epsilon": 1.0, "delta": 0.0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        one_run_p_value(**args)  # type: ignore[arg-type]


def test_audits_refuse_bad_scores_and_confidence() -> None:
    inc = np.array([True, False])
    with pytest.raises(ConfigError, match="NaN"):
        one_run_audit([1.0, float("nan")], inc, k_plus=1, k_minus=1, delta=0.0)
    with pytest.raises(ConfigError, match="boolean"):
        one_run_audit([1.0, 0.0], [1, 0], k_plus=1, k_minus=1, delta=0.0)
    with pytest.raises(ConfigError, match="confidence"):
        _bound(10, 10, conf=1.0)
    with pytest.raises(ConfigError, match="both"):
        threshold_audit([1.0, 2.0], np.array([True, True]), thresholds=[1.5], delta=0.0)


def test_audit_result_validates_and_refutes() -> None:
    res = AuditResult(
        epsilon_lower_bound=2.0,
        confidence=0.95,
        delta=1e-5,
        guesses=10,
        correct=10,
        k_plus=5,
        k_minus=5,
        canaries=20,
        method=AuditMethod.ONE_RUN,
    )
    assert res.refutes(1.9)
    assert not res.refutes(2.0)
    with pytest.raises(ConfigError, match="guesses"):
        AuditResult(
            epsilon_lower_bound=2.0,
            confidence=0.95,
            delta=1e-5,
            guesses=10,
            correct=10,
            k_plus=5,
            k_minus=4,
            canaries=20,
            method=AuditMethod.ONE_RUN,
        )


def test_statistics_module_is_sans_io() -> None:
    code = (
        "import sys, fedmap_secure.privacy.audit\n"
        "leaked = {'torch', 'grpc'} & set(sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
