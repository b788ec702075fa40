from __future__ import annotations

import math

import numpy as np
import pytest

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import ScoreConfig
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.contribution import contribution_score, exact_clipped_mean


def test_score_matches_reference_formula_inside_the_clamp() -> None:
    loglik = -np.array([0.1, 0.3, 0.2, 0.4])
    omega = contribution_score(per_sample_loglik=loglik, prior_value=0.8, config=ScoreConfig())
    assert omega == pytest.approx(math.exp(-0.25 - 0.8 / 4))


def test_score_is_clamped_into_range() -> None:
    cfg = ScoreConfig(omega_min=1e-3, omega_max=1.0)
    low = contribution_score(per_sample_loglik=np.full(10, -50.0), prior_value=0.0, config=cfg)
    assert low == pytest.approx(1e-3)
    high = contribution_score(per_sample_loglik=np.zeros(10), prior_value=-100.0, config=cfg)
    assert high == pytest.approx(1.0)


def test_per_sample_clipping_bounds_one_sample_influence() -> None:
    cfg = ScoreConfig(loglik_clip=2.0, omega_min=1e-9)
    base = np.full(20, -0.5)
    outlier = base.copy()
    outlier[0] = -np.inf
    a = math.log(contribution_score(per_sample_loglik=base, prior_value=1.0, config=cfg))
    b = math.log(contribution_score(per_sample_loglik=outlier, prior_value=1.0, config=cfg))
    assert abs(a - b) <= 2.0 / 20 + 1e-12


def test_release_is_pluggable() -> None:
    calls: list[tuple[int, float]] = []

    def noisy(loglik: FloatVector, clip: float) -> float:
        calls.append((loglik.size, clip))
        return exact_clipped_mean(loglik, clip) - 0.5

    cfg = ScoreConfig(loglik_clip=3.0)
    loglik = np.full(8, -0.2)
    plain = contribution_score(per_sample_loglik=loglik, prior_value=0.0, config=cfg)
    shifted = contribution_score(
        per_sample_loglik=loglik, prior_value=0.0, config=cfg, release=noisy
    )
    assert calls == [(8, 3.0)]
    assert math.log(plain) - math.log(shifted) == pytest.approx(0.5)


def test_score_rejects_empty_and_nan() -> None:
    with pytest.raises(ConfigError):
        contribution_score(per_sample_loglik=np.zeros(0), prior_value=0.0, config=ScoreConfig())
    with pytest.raises(ConfigError):
        contribution_score(
            per_sample_loglik=np.array([np.nan]), prior_value=0.0, config=ScoreConfig()
        )
