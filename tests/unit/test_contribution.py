from __future__ import annotations

import math

import numpy as np
import pytest

from fedmap_secure.config.schema import ScoreConfig
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.contribution import contribution_score


def test_score_matches_reference_formula_inside_the_clamp() -> None:
    nll = np.array([0.1, 0.3, 0.2, 0.4])
    omega = contribution_score(nll_per_sample=nll, prior_value=0.8, config=ScoreConfig())
    assert omega == pytest.approx(math.exp(-0.25 - 0.8 / 4))


def test_score_is_clamped_into_range() -> None:
    cfg = ScoreConfig(omega_min=1e-3, omega_max=1.0)
    low = contribution_score(nll_per_sample=np.full(10, 50.0), prior_value=0.0, config=cfg)
    assert low == pytest.approx(1e-3)
    high = contribution_score(nll_per_sample=np.zeros(10), prior_value=-100.0, config=cfg)
    assert high == pytest.approx(1.0)


def test_per_sample_clipping_bounds_one_sample_influence() -> None:
    cfg = ScoreConfig(loglik_clip=2.0, omega_min=1e-9)
    base = np.full(20, 0.5)
    outlier = base.copy()
    outlier[0] = 1e6
    a = math.log(contribution_score(nll_per_sample=base, prior_value=1.0, config=cfg))
    b = math.log(contribution_score(nll_per_sample=outlier, prior_value=1.0, config=cfg))
    assert abs(a - b) <= 2.0 / 20 + 1e-12


def test_score_rejects_empty_and_non_finite() -> None:
    with pytest.raises(ConfigError):
        contribution_score(nll_per_sample=np.zeros(0), prior_value=0.0, config=ScoreConfig())
    with pytest.raises(ConfigError):
        contribution_score(nll_per_sample=np.array([np.nan]), prior_value=0.0, config=ScoreConfig())
