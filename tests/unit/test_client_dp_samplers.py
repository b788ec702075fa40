"""Integer noise samplers: moments, goodness of fit against exact pmfs, determinism, validation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats  # type: ignore[import-untyped]

from fedmap_secure.client_dp import samplers
from fedmap_secure.client_dp.samplers import discrete_gaussian, poisson, skellam, uniform01
from fedmap_secure.errors import ConfigError
from fedmap_secure.training.secure_noise import CsprngStream


def _stream(seed: int, label: str = "samplers") -> Callable[[int], bytes]:
    return CsprngStream.seeded(seed, label=label).random_bytes


def _chisquare_p(draws: npt.NDArray[np.int64], pmf: Callable[[np.ndarray], np.ndarray]) -> float:
    """Chi-square p-value of integer draws against ``pmf``, tails pooled into the end bins."""
    n = draws.shape[0]
    ks = np.arange(draws.min(), draws.max() + 1)
    expected = n * pmf(ks)
    keep = ks[expected >= 5.0]
    lo, hi = int(keep.min()), int(keep.max())
    clipped = np.clip(draws, lo, hi)
    observed = np.bincount(clipped - lo, minlength=hi - lo + 1).astype(float)
    probs = pmf(np.arange(lo, hi + 1)).astype(float)
    probs[0] = pmf(np.arange(lo - 200, lo + 1)).sum()
    probs[-1] = pmf(np.arange(hi, hi + 201)).sum()
    result = stats.chisquare(observed, n * probs / probs.sum())
    return float(result.pvalue)


def test_uniform01_has_53_bit_grid_values_in_unit_interval() -> None:
    u = uniform01(20000, _stream(1))
    assert u.dtype == np.float64
    assert float(u.min()) >= 0.0
    assert float(u.max()) < 1.0
    assert np.all(u * 2.0**53 == np.floor(u * 2.0**53))
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert uniform01(0, _stream(1)).shape == (0,)


def test_uniform01_reads_exactly_eight_bytes_per_value() -> None:
    asked: list[int] = []

    def source(n: int) -> bytes:
        asked.append(n)
        return bytes(n)

    assert np.array_equal(uniform01(5, source), np.zeros(5))
    assert asked == [40]


def test_short_random_bytes_source_is_rejected() -> None:
    with pytest.raises(ConfigError, match="did not return"):
        uniform01(4, lambda n: bytes(n - 1))


@pytest.mark.parametrize("sigma", [0.6, 3.0, 1000.0, 65536.0])
def test_discrete_gaussian_mean_and_variance(sigma: float) -> None:
    n = 20000
    x = discrete_gaussian(sigma, n, _stream(2))
    assert x.dtype == np.int64
    assert x.shape == (n,)
    # exact variance of N_Z(0, sigma^2) (below sigma^2 for small sigma)
    ks = np.arange(-15 * math.ceil(sigma), 15 * math.ceil(sigma) + 1, dtype=np.float64)
    weights = np.exp(-(ks**2) / (2 * sigma**2))
    variance = float(np.sum(ks**2 * weights) / np.sum(weights))
    assert abs(float(x.mean())) < 5 * math.sqrt(variance / n)
    assert float(x.var()) == pytest.approx(variance, rel=0.05)


def test_discrete_gaussian_fits_the_exact_pmf() -> None:
    sigma = 1.5
    ks_all = np.arange(-40, 41, dtype=np.float64)
    z = float(np.sum(np.exp(-(ks_all**2) / (2 * sigma**2))))

    def pmf(ks: np.ndarray) -> np.ndarray:
        return np.exp(-(ks.astype(np.float64) ** 2) / (2 * sigma**2)) / z

    draws = discrete_gaussian(sigma, 40000, _stream(3))
    assert _chisquare_p(draws, pmf) > 1e-4
    # the test has power: a 15% wider discrete Gaussian is rejected
    assert _chisquare_p(discrete_gaussian(1.15 * sigma, 40000, _stream(3)), pmf) < 1e-4


def test_discrete_gaussian_at_the_largest_required_sigma() -> None:
    x = discrete_gaussian(2.0**20, 16384, _stream(4))
    assert float(np.std(x)) == pytest.approx(2.0**20, rel=0.05)


@pytest.mark.parametrize("variance", [0.5, 4.0, 2.0**20, 2.0**32])
def test_skellam_mean_and_variance(variance: float) -> None:
    n = 20000
    x = skellam(variance, n, _stream(5))
    assert x.dtype == np.int64
    assert abs(float(x.mean())) < 5 * math.sqrt(variance / n)
    assert float(x.var()) == pytest.approx(variance, rel=0.05)


def test_skellam_fits_the_scipy_pmf() -> None:
    variance = 3.0
    mu = variance / 2

    def pmf(ks: np.ndarray) -> np.ndarray:
        return np.asarray(stats.skellam.pmf(ks, mu, mu), dtype=np.float64)

    draws = skellam(variance, 40000, _stream(6))
    assert _chisquare_p(draws, pmf) > 1e-4
    assert _chisquare_p(skellam(1.3 * variance, 40000, _stream(6)), pmf) < 1e-4


@pytest.mark.parametrize("mu", [0.3, 7.0, 1000.0, 2.0**20])
def test_poisson_inversion_matches_scipy_ppf_on_the_same_uniforms(mu: float) -> None:
    u = samplers._open_uniform01(1500, _stream(7))
    assert float(u.min()) > 0.0
    assert float(u.max()) < 1.0
    k = poisson(mu, 1500, _stream(7))
    assert np.array_equal(k, stats.poisson.ppf(u, mu).astype(np.int64))


def _poisson_log_pmf(j: np.ndarray, mu: float) -> np.ndarray:
    """log P(X = j) in the saddle-point form (Loader 2000), independent of scipy's gamma."""
    d = j - mu
    bd0 = j * np.log1p(d / mu) - d
    return -0.5 * np.log(2 * np.pi * j) - 1.0 / (12.0 * j) - bd0


def _poisson_tail(k: int, mu: float) -> float:
    """P(X > k) for k above the mean, by direct summation of the pmf."""
    j = np.arange(k + 1, k + 1 + int(40 * math.sqrt(mu)), dtype=np.float64)
    return float(np.sum(np.exp(_poisson_log_pmf(j, mu))))


def _words_for(us: list[float]) -> Callable[[int], bytes]:
    """A byte source whose open uniforms (2 (w >> 12) + 1) / 2^53 are as close as possible to us."""
    words = np.array([int(u * 2.0**52) << 12 for u in us], dtype="<u8")
    data = words.tobytes()
    return lambda n: data[:n]


@pytest.mark.parametrize("tail", [3e-5, 1.7e-6, 1e-9])
def test_poisson_upper_tail_is_exact_at_the_largest_mean(tail: float) -> None:
    # scipy's pdtr/pdtrc under-count this tail by up to 80% at mu = 2^31 (capped series)
    mu = 2.0**31
    source = _words_for([1.0 - tail])
    u = float(samplers._open_uniform01(1, source)[0])
    k = int(poisson(mu, 1, source)[0])
    assert _poisson_tail(k, mu) <= 1.0 - u < _poisson_tail(k - 1, mu)


def test_poisson_inversion_brackets_the_quantile_at_large_mean() -> None:
    mu = 2.0**31
    u = samplers._open_uniform01(4000, _stream(8))
    k = poisson(mu, 4000, _stream(8)).astype(np.float64)
    assert np.all(stats.poisson.cdf(k, mu) >= u)
    assert np.all(stats.poisson.cdf(k - 1, mu) < u)


@pytest.mark.parametrize(
    "draw",
    [
        lambda rb: discrete_gaussian(7.5, 500, rb),
        lambda rb: skellam(30.0, 500, rb),
        lambda rb: uniform01(500, rb),
    ],
)
def test_samplers_are_deterministic_given_the_stream(
    draw: Callable[[Callable[[int], bytes]], np.ndarray],
) -> None:
    assert np.array_equal(draw(_stream(9)), draw(_stream(9)))
    assert not np.array_equal(draw(_stream(9)), draw(_stream(10)))


def test_zero_samples_are_empty() -> None:
    assert discrete_gaussian(2.0, 0, _stream(1)).shape == (0,)
    assert skellam(2.0, 0, _stream(1)).shape == (0,)


@pytest.mark.parametrize("sigma", [0.0, -1.0, math.nan, math.inf, 2.0**25, True, "3"])
def test_invalid_sigma_raises(sigma: object) -> None:
    with pytest.raises(ConfigError, match="sigma"):
        discrete_gaussian(sigma, 4, _stream(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("variance", [0.0, -2.0, math.nan, math.inf, 2.0**33, False])
def test_invalid_variance_raises(variance: object) -> None:
    with pytest.raises(ConfigError, match="variance"):
        skellam(variance, 4, _stream(1))  # type: ignore[arg-type]


def test_invalid_poisson_mean_raises() -> None:
    for mu in (0.0, 2.0**32, math.nan):
        with pytest.raises(ConfigError, match="Poisson mean"):
            poisson(mu, 4, _stream(1))


@pytest.mark.parametrize("n", [-1, 2.5, True])
def test_invalid_count_raises(n: object) -> None:
    for draw in (discrete_gaussian, skellam):
        with pytest.raises(ConfigError, match="sample count"):
            draw(2.0, n, _stream(1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sample count"):
        uniform01(n, _stream(1))  # type: ignore[arg-type]
