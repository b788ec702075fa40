"""DP release of the mean log-likelihood (the data-dependent part of omega_k)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.training.dp_score import (
    GaussianReleaseParams,
    clipped_loglik_sum,
    gaussian_release_event_params,
    release_mean_loglik,
    shrink_noisy_mean,
)
from fedmap_secure.training.secure_noise import CsprngStream, SecureGaussian


class ZeroNoise:
    def standard_normal(self, n: int) -> npt.NDArray[np.float64]:
        return np.zeros(n)


def test_without_noise_it_is_the_clipped_mean() -> None:
    loglik = np.array([-0.1, -0.5, -30.0, -np.inf, 0.2])
    released = release_mean_loglik(
        loglik, clip=4.0, noise_multiplier=1.0, public_n=5, random=ZeroNoise()
    )
    assert released == pytest.approx((-0.1 - 0.5 - 4.0 - 4.0 + 0.0) / 5)


def test_noise_has_std_sigma_times_clip_over_n() -> None:
    rng = SecureGaussian(CsprngStream.seeded(0, label="score-test"))
    loglik = np.full(50, -0.7)
    sigma, clip, n = 2.0, 3.0, 50
    draws = np.array(
        [
            release_mean_loglik(
                loglik, clip=clip, noise_multiplier=sigma, public_n=n, random=rng, clamp=False
            )
            for _ in range(20_000)
        ]
    )
    assert abs(draws.mean() - (-0.7)) < 0.01
    assert abs(draws.std() / (sigma * clip / n) - 1.0) < 0.02


def test_clamped_output_stays_in_range() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        out = release_mean_loglik(
            np.full(3, -0.1), clip=1.0, noise_multiplier=5.0, public_n=3, random=rng
        )
        assert -1.0 <= out <= 0.0


def test_default_source_is_the_csprng_and_random() -> None:
    a = release_mean_loglik(
        np.full(4, -0.5), clip=1.0, noise_multiplier=1.0, public_n=4, clamp=False
    )
    b = release_mean_loglik(
        np.full(4, -0.5), clip=1.0, noise_multiplier=1.0, public_n=4, clamp=False
    )
    assert a != b


records = st.lists(
    st.floats(min_value=-1e6, max_value=10.0, allow_nan=False), min_size=1, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(
    data=records,
    extra=st.floats(min_value=-1e6, max_value=10.0, allow_nan=False),
    index=st.integers(min_value=0, max_value=29),
    clip=st.floats(min_value=0.01, max_value=100.0),
)
def test_sensitivity_is_clip_for_add_remove_and_replace(
    data: list[float], extra: float, index: int, clip: float
) -> None:
    base = clipped_loglik_sum(np.array(data), clip)
    added = clipped_loglik_sum(np.array([*data, extra]), clip)
    replaced = list(data)
    replaced[index % len(data)] = extra
    swapped = clipped_loglik_sum(np.array(replaced), clip)
    assert abs(added - base) <= clip * (1 + 1e-12)
    assert abs(swapped - base) <= clip * (1 + 1e-12)


def test_event_params() -> None:
    assert gaussian_release_event_params(clip=2.0, noise_multiplier=3.0) == GaussianReleaseParams(
        noise_multiplier=3.0, count=1, sensitivity=2.0, noise_std=6.0
    )


@pytest.mark.parametrize(
    ("clip", "sigma", "n"),
    [(0.0, 1.0, 5), (1.0, 0.0, 5), (float("nan"), 1.0, 5), (1.0, float("inf"), 5), (1.0, 1.0, 0)],
)
def test_invalid_parameters_refused(clip: float, sigma: float, n: int) -> None:
    with pytest.raises(ConfigError):
        release_mean_loglik(np.zeros(5), clip=clip, noise_multiplier=sigma, public_n=n)


def test_nan_loglik_refused() -> None:
    with pytest.raises(DataError, match="NaN"):
        release_mean_loglik(np.array([-1.0, np.nan]), clip=1.0, noise_multiplier=1.0, public_n=2)


def test_shrinkage_follows_the_data_when_noise_is_small_and_the_prior_when_large() -> None:
    kw = {"prior_mean": -0.7, "prior_sd": 0.35, "clip": 2.0}
    assert shrink_noisy_mean(-0.3, noise_std=0.0, **kw) == pytest.approx(-0.3)
    # noise std 100x the prior sd: the released value barely moves the estimate
    assert shrink_noisy_mean(-2.0, noise_std=35.0, **kw) == pytest.approx(-0.7, abs=1e-3)
    assert shrink_noisy_mean(+50.0, noise_std=35.0, **kw) == pytest.approx(-0.7, abs=0.05)
    # equal noise and prior sd: halfway; the result stays inside [-B, 0]
    assert shrink_noisy_mean(-0.1, noise_std=0.35, **kw) == pytest.approx(-0.4)
    assert shrink_noisy_mean(5.0, noise_std=0.0, **kw) == 0.0
    with pytest.raises(ConfigError):
        shrink_noisy_mean(-0.3, noise_std=float("nan"), **kw)
