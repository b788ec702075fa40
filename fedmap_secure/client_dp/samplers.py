"""Integer noise samplers for distributed DP, driven only by injected CSPRNG bytes.

Every sampler takes ``random_bytes: Callable[[int], bytes]`` (production:
``os.urandom``; tests: a seeded ChaCha20 stream) and never touches numpy's or
``random``'s pseudo-random generators, whose state can be recovered from their
outputs. Given the same byte stream the output is identical.

``uniform01``
    u = k / 2^53 for k the top 53 bits of a little-endian 64-bit word: exactly
    uniform on the 2^53-point grid of [0, 1).

``discrete_gaussian`` (Canonne, Kamath, Steinke, "The Discrete Gaussian for
Differential Privacy", NeurIPS 2020, Algorithm 3)
    Target: P(X = x) = exp(-x^2 / (2 sigma^2)) / Z over the integers.
    Proposal: Y ~ discrete Laplace with scale t = floor(sigma) + 1,
    P(Y = y) proportional to exp(-|y| / t), drawn as Y = G1 - G2 for two
    independent geometrics with P(G >= k) = exp(-k / t), G = floor(-t ln(1 - u)).
    Accept Y with probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)); the
    accepted values are exactly N_Z(0, sigma^2) in real arithmetic. Measured
    acceptance is about 0.45 for sigma < 1 and 0.70-0.76 for sigma >= 1.5, so
    the expected number of proposals per output is at most about 2.2.
    Candidates are drawn in vectorised batches (2x the outstanding count, 24
    bytes each) until ``n`` are accepted.

    FLOAT APPROXIMATION. This is the float-approximate vectorised form (the
    same shape as TF Privacy's published distributed discrete Gaussian
    sampler), not CKS's exact-arithmetic sampler (which draws Bernoulli(exp(-g))
    with rational arithmetic and no floats). Here the geometric draws and the
    acceptance probability are computed in float64 from 53-bit uniforms, and
    the acceptance test compares a float uniform with a float exp(). What that
    means: every probability the sampler realises is off by an additive error
    of order 2^-52 (grid of the uniforms, rounding of log1p and exp), so the
    output pmf differs from N_Z(0, sigma^2) by that much per value, tail values
    whose ideal probability is far below 2^-53 are effectively never produced,
    and the deviations follow the floating-point grid rather than being
    random. The formal DP guarantee is proved for the ideal distribution, not
    for this sampler; an adversary who could observe many single noisy values
    might in principle test hypotheses on these structured deviations (the
    float attack surface of Mironov, CCS 2012, and Jin et al., IEEE S&P 2022).
    Mitigations, not proofs: outputs are integers (no low-order float bits to
    inspect), and a site's noise is only ever released masked inside a secure
    sum together with the other sites' noise.

``skellam`` (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially
Private Federated Learning", NeurIPS 2021)
    Sk(mu, mu) = P1 - P2 for independent P1, P2 ~ Poisson(mu), mu = variance / 2;
    variance 2 mu. Each Poisson is drawn by inversion, k = min{k : F(k) >= u},
    with F the Poisson CDF from scipy.special (``pdtr`` = regularized upper
    incomplete gamma Q(k + 1, mu); ``pdtrc`` = 1 - F for the upper half, which
    keeps relative accuracy in the upper tail). The search starts at the
    Cornish-Fisher guess mu + sqrt(mu) z + (z^2 - 1) / 6, z = Phi^-1(u),
    grows a bracket F(lo) < u <= F(hi) around it by doubling steps and bisects
    it to F(k - 1) < u <= F(k) (a few vectorised CDF calls), so the result
    is exact up to the accuracy of scipy's incomplete gamma (about 1e-14
    relative). Uniforms are (2k + 1) / 2^53 for 52-bit k, symmetric in (0, 1)
    and never 0 or 1. scipy.stats.poisson.ppf gives the same values but
    inverts through ``pdtrik``, which takes seconds to minutes per 16k values
    at mu >= 2^20; the bracket search needs a few vectorised CDF calls.
    Float caveat as for the discrete Gaussian: inversion from 52-bit uniforms
    realises each probability only to about 2^-53 (tails beyond that are
    truncated) and inherits the CDF's rounding; not an exact sampler.

Limits: sigma, and sqrt(variance), are at most MAX_NOISE_STD = 2^24 so every
intermediate stays an exactly represented float64 integer and int64 never
overflows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from scipy import special  # type: ignore[import-untyped]

from fedmap_secure.errors import ConfigError

RandomBytes = Callable[[int], bytes]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

MAX_NOISE_STD = float(2**24)
"""Largest sigma (discrete Gaussian) or sqrt(variance) (Skellam) accepted."""
_TWO_POW_MINUS_53 = 2.0**-53
_MIN_BATCH = 64
_MAX_DOUBLINGS = 64


def _words(n: int, random_bytes: RandomBytes) -> npt.NDArray[np.uint64]:
    """``n`` little-endian 64-bit words from exactly ``8 n`` bytes of the stream."""
    raw = random_bytes(8 * n)
    if not isinstance(raw, bytes | bytearray) or len(raw) != 8 * n:
        raise ConfigError(f"random_bytes({8 * n}) did not return {8 * n} bytes")
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigError(f"sample count must be an integer >= 0, got {n!r}")


def uniform01(n: int, random_bytes: RandomBytes) -> FloatArray:
    """``n`` i.i.d. uniforms on [0, 1), 53 random bits each (``8 n`` bytes)."""
    _check_count(n)
    out = (_words(int(n), random_bytes) >> np.uint64(11)).astype(np.float64)
    out *= _TWO_POW_MINUS_53
    return out


def _open_uniform01(n: int, random_bytes: RandomBytes) -> FloatArray:
    """``n`` uniforms (2k + 1) / 2^53 for 52-bit k: symmetric in (0, 1), never 0 or 1."""
    k = _words(n, random_bytes) >> np.uint64(12)
    out = (2.0 * k.astype(np.float64) + 1.0) * _TWO_POW_MINUS_53
    return out


def _check_std(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise ConfigError(f"{what} must be a real number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v <= MAX_NOISE_STD):
        raise ConfigError(f"{what} must be finite, > 0 and <= {MAX_NOISE_STD:g}, got {value!r}")
    return v


def discrete_gaussian(sigma: float, n: int, random_bytes: RandomBytes) -> IntArray:
    """``n`` i.i.d. draws of N_Z(0, sigma^2) (float-approximate; see module docstring)."""
    s = _check_std(sigma, "discrete Gaussian sigma")
    _check_count(n)
    t = math.floor(s) + 1
    centre = s * s / t
    out = np.empty(int(n), dtype=np.int64)
    filled = 0
    while filled < n:
        batch = max(_MIN_BATCH, 2 * (int(n) - filled))
        u = uniform01(3 * batch, random_bytes)
        g1 = np.floor(-t * np.log1p(-u[:batch]))
        g2 = np.floor(-t * np.log1p(-u[batch : 2 * batch]))
        y = g1 - g2
        gap = np.abs(y) - centre
        accept = u[2 * batch :] < np.exp(-(gap * gap) / (2.0 * s * s))
        kept = y[accept][: int(n) - filled]
        out[filled : filled + kept.shape[0]] = kept.astype(np.int64)
        filled += kept.shape[0]
    return out


def poisson(mu: float, n: int, random_bytes: RandomBytes) -> IntArray:
    """``n`` i.i.d. Poisson(mu) draws by CDF inversion (see module docstring)."""
    if isinstance(mu, bool) or not isinstance(mu, int | float | np.floating):
        raise ConfigError(f"Poisson mean must be a real number, got {mu!r}")
    m = float(mu)
    if not (math.isfinite(m) and 0.0 < m <= MAX_NOISE_STD**2):
        raise ConfigError(f"Poisson mean must be finite, > 0 and <= 2^48, got {mu!r}")
    _check_count(n)
    u = _open_uniform01(int(n), random_bytes)
    z = special.ndtri(u)
    guess = np.rint(m + math.sqrt(m) * z + (z * z - 1.0) / 6.0)
    return _invert_cdf(m, u, guess).astype(np.int64)


def _covers(k: FloatArray, m: float, u: FloatArray) -> npt.NDArray[np.bool_]:
    """F(k) >= u, evaluated as 1 - F(k) <= 1 - u for u > 1/2; False for k < 0."""
    safe = np.maximum(k, 0.0)
    upper = u > 0.5
    cdf: FloatArray = np.asarray(special.pdtr(safe, m), dtype=np.float64)
    survival: FloatArray = np.asarray(special.pdtrc(safe, m), dtype=np.float64)
    low_side = cdf >= u
    high_side = survival <= 1.0 - u  # 1 - u is exact for u in [1/2, 1)
    covered: npt.NDArray[np.bool_] = np.where(upper, high_side, low_side) & (k >= 0.0)
    return covered


def _invert_cdf(m: float, u: FloatArray, guess: FloatArray) -> FloatArray:
    """min{k >= 0 : F(k) >= u} for each u: bracket around ``guess``, then bisect.

    Invariant: F(lo) < u <= F(hi) (lo = -1 always qualifies). The bracket
    grows by doubling steps and bisection halves it, so the cost is a
    logarithmic number of vectorised CDF calls even where the guess is poor.
    """
    lo = np.maximum(guess - 1.0, -1.0)
    hi = np.maximum(guess, 0.0)
    step = 1.0
    for _ in range(_MAX_DOUBLINGS):
        bad_lo = _covers(lo, m, u)
        bad_hi = ~_covers(hi, m, u)
        if not (bad_lo.any() or bad_hi.any()):
            break
        lo[bad_lo] = np.maximum(lo[bad_lo] - step, -1.0)
        hi[bad_hi] += step
        step *= 2.0
    else:
        raise ConfigError(f"Poisson inversion did not bracket the quantile for mean {m!r}")
    while True:
        wide = hi - lo > 1.0
        if not wide.any():
            return hi
        mid = np.floor((lo[wide] + hi[wide]) / 2.0)
        covered = _covers(mid, m, u[wide])
        hi[wide] = np.where(covered, mid, hi[wide])
        lo[wide] = np.where(covered, lo[wide], mid)


def skellam(variance: float, n: int, random_bytes: RandomBytes) -> IntArray:
    """``n`` i.i.d. symmetric Skellam draws Poisson(v/2) - Poisson(v/2), variance v."""
    if isinstance(variance, bool) or not isinstance(variance, int | float | np.floating):
        raise ConfigError(f"Skellam variance must be a real number, got {variance!r}")
    _check_std(math.sqrt(variance) if float(variance) >= 0 else -1.0, "Skellam sqrt(variance)")
    _check_count(n)
    first = poisson(float(variance) / 2.0, int(n), random_bytes)
    second = poisson(float(variance) / 2.0, int(n), random_bytes)
    return first - second
