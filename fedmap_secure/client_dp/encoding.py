"""Encode one site's float vector into Z_{2^bits} with its share of integer DP noise.

Pipeline (Kairouz, Liu, Steinke, ICML 2021, Algorithm 1 "DDGauss" client
side; Agarwal, Kairouz, Liu, NeurIPS 2021 for the Skellam variant). For a
layout with fields f of L2 bounds B_f, d = layout.size, d' = padded dim:

1. Clip, per field: x_f <- x_f * min(1, B_f / ||x_f||_2). Then
   ||x||_2 <= c_float = sqrt(sum_f B_f^2) (``l2_clip``).
2. Rotate: z = U [x; 0] with U the public randomized Hadamard of the round
   (``rotation``). Orthogonal, so ||z||_2 = ||x||_2; coordinates are flat.
3. Scale: z <- z / gamma, gamma = ``scale`` (one integer level); now
   ||z||_2 <= c = c_float / gamma (``norm_levels``).
4. Conditional stochastic rounding: q_i = floor(z_i) + Bernoulli(z_i - floor(z_i)),
   unbiased (E q = z), redrawn as a whole until ||q||_2 <= Delta_2 where
   Delta_2 = ``rounded_l2_bound(c, d', beta)`` =
   min(c + sqrt(d'), sqrt(c^2 + d'/4 + sqrt(2 ln(1/beta)) (c + sqrt(d')/2)))
   (DDG paper, conditional randomized rounding: one attempt succeeds with
   probability >= 1 - beta; beta = 0 gives the deterministic bound c + sqrt(d'), which
   every rounding meets, since |q_i - z_i| < 1). Delta_2 is the L2
   sensitivity the accountant must use. After 1000 failed attempts the
   encoder raises PrivacyError rather than release an unbounded vector.
5. Noise: q <- q + eta with eta_i i.i.d. N_Z(0, sigma^2) (discrete Gaussian)
   or Sk(sigma^2/2, sigma^2/2) (Skellam), sigma = ``local_noise_std`` levels.
   The n sites' noises sum to the central noise of the mechanism (exactly a
   Skellam of variance n sigma^2; close to a discrete Gaussian of variance
   n sigma^2 for sigma >~ 1, see the DDG paper's Theorem 14).
6. Ring: r = (q + eta) mod 2^bits in [0, 2^bits) (negatives wrap to the top).

Server side, after secure aggregation returns R = sum_i r_i mod 2^bits:
centre R into [-2^(bits-1), 2^(bits-1)), multiply by gamma, apply U^T and
keep the first d coordinates. Decoding is exact (up to float rounding of the
inverse transform) whenever every coordinate of the integer sum lies in the
centred range; otherwise that coordinate wraps (modular clipping), which the
flattening rotation makes rare for a well-chosen gamma and bits (calibration
is the caller's job).

Threat model: one site's encoded vector r carries only that site's noise,
i.e. 1/n of the noise variance the privacy guarantee is computed for. On its
own it is NOT differentially private at the configured level and must only
ever leave the site masked by secure aggregation; the server must only learn
the sum. The rotation seed is public and gives no secrecy. The clipped-field
list stays at the site (it reveals whether a field was large). All randomness
(rounding, noise) comes from the injected ``random_bytes``; with a CSPRNG the
rounding and noise are unpredictable to the server and to other sites. If
fewer than n sites survive a round the sum carries less noise than planned:
the caller must account for dropouts.

Sans-I/O: numpy only (samplers use scipy.special), no clock, no filesystem.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.client_dp.rotation import RandomizedHadamard
from fedmap_secure.client_dp.samplers import (
    MAX_NOISE_STD,
    MAX_SKELLAM_VARIANCE,
    discrete_gaussian,
    skellam,
    uniform01,
)
from fedmap_secure.crypto.prg import SEED_SIZE
from fedmap_secure.errors import ConfigError, PrivacyError

RandomBytes = Callable[[int], bytes]
IntArray = npt.NDArray[np.int64]
RingVector = npt.NDArray[np.uint64]

MAX_ROUNDING_ATTEMPTS = 1000
"""Conditional rounding gives up (PrivacyError) after this many rejected draws."""
MAX_NORM_LEVELS = float(2**52)
"""Largest rounded L2 bound accepted: keeps integer vectors exact in float64 and int64."""


class NoiseKind(enum.Enum):
    """The integer noise each site adds before masking."""

    DISCRETE_GAUSSIAN = "ddg"
    """Distributed discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021)."""
    SKELLAM = "skellam"
    """Skellam (Agarwal, Kairouz, Liu, NeurIPS 2021)."""


def rounded_l2_bound(norm_levels: float, dim: int, beta: float) -> float:
    """Delta_2: the L2 norm every conditionally rounded vector satisfies.

    ``norm_levels`` is c, the L2 bound of the scaled vector in integer levels;
    ``dim`` is d, its length; ``beta`` in [0, 1). See the module docstring.
    """
    c = float(norm_levels)
    if not (math.isfinite(c) and c >= 0.0):
        raise ConfigError(f"norm bound in levels must be finite and >= 0, got {norm_levels!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"dimension must be an integer >= 1, got {dim!r}")
    b = _check_beta(beta)
    worst = c + math.sqrt(dim)
    if b == 0.0:
        return worst
    tail = math.sqrt(2.0 * math.log(1.0 / b)) * (c + math.sqrt(dim) / 2.0)
    return min(worst, math.sqrt(c * c + dim / 4.0 + tail))


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float):
        raise ConfigError(f"beta must be a real number in [0, 1), got {beta!r}")
    b = float(beta)
    if not (math.isfinite(b) and 0.0 <= b < 1.0):
        raise ConfigError(f"beta must be in [0, 1), got {beta!r}")
    return b


def _positive_real(value: float, what: str, limit: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a real number, got {value!r}")
    if not (math.isfinite(value) and 0.0 < value <= limit):
        raise ConfigError(f"{what} must be finite, > 0 and <= {limit:g}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RingEncoding:
    """The public parameters every site and the server share for one round.

    ``bits``: ring Z_{2^bits}, 2..64. ``scale``: gamma, the float value of one
    integer level. ``local_noise_std``: each site's noise std in levels
    (at most 2^24 for the discrete Gaussian, 2^16 for Skellam).
    ``beta``: conditional rounding parameter in [0, 1). ``rotation_seed``:
    the round's 32 public bytes for the randomized Hadamard rotation.
    """

    mechanism: NoiseKind
    bits: int
    scale: float
    local_noise_std: float
    beta: float
    rotation_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.mechanism, NoiseKind):
            raise ConfigError(f"mechanism must be a NoiseKind, got {self.mechanism!r}")
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise ConfigError(f"ring bits must be an integer, got {self.bits!r}")
        if not 2 <= self.bits <= 64:
            raise ConfigError(f"ring bits must be in 2..64, got {self.bits}")
        _positive_real(self.scale, "scale", math.inf)
        limit = MAX_NOISE_STD
        if self.mechanism is NoiseKind.SKELLAM:
            limit = math.sqrt(MAX_SKELLAM_VARIANCE)
        _positive_real(self.local_noise_std, "local_noise_std", limit)
        _check_beta(self.beta)
        if not isinstance(self.rotation_seed, bytes) or len(self.rotation_seed) != SEED_SIZE:
            raise ConfigError(f"rotation_seed must be {SEED_SIZE} bytes")


@dataclass(frozen=True, kw_only=True)
class EncodedContribution:
    """One site's noisy ring vector, ready for SecAgg masking.

    ``clipped_fields`` and ``rounding_attempts`` are site-local diagnostics:
    they must not be sent to the server in the clear.
    """

    ring: RingVector
    clipped_fields: tuple[str, ...]
    rounding_attempts: int

    def __post_init__(self) -> None:
        if not isinstance(self.ring, np.ndarray) or self.ring.dtype != np.uint64:
            raise ConfigError("encoded ring vector must be a uint64 array")
        if self.ring.ndim != 1:
            raise ConfigError(f"encoded ring vector must be 1-D, got shape {self.ring.shape}")
        if not all(isinstance(name, str) for name in self.clipped_fields):
            raise ConfigError("clipped_fields must be a tuple of field names")
        attempts = self.rounding_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError(f"rounding_attempts must be >= 1, got {self.rounding_attempts!r}")


def clip_fields(layout: VectorLayout, vector: FloatVector) -> tuple[FloatVector, tuple[str, ...]]:
    """Scale each field to L2 norm <= its bound; return the copy and the clipped names."""
    out = np.array(vector, dtype=np.float64, copy=True)
    clipped: list[str] = []
    start = 0
    for f in layout.fields:
        part = out[start : start + f.length]
        norm = _l2_norm(part)
        if norm > f.bound:
            part *= f.bound / norm
            clipped.append(f.name)
        start += f.length
    return out, tuple(clipped)


def _l2_norm(values: FloatVector) -> float:
    """||values||_2 without overflow: the largest magnitude is factored out first."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak == 0.0:
        return 0.0
    return peak * float(np.linalg.norm(values / peak))


def conditional_round(
    values: FloatVector, bound: float, random_bytes: RandomBytes
) -> tuple[IntArray, int]:
    """Unbiased stochastic rounding of ``values``, redrawn until ||q||_2 <= ``bound``.

    Returns (q, attempts). PrivacyError after MAX_ROUNDING_ATTEMPTS failures.
    """
    floor = np.floor(values)
    frac = values - floor
    base = floor.astype(np.int64)
    limit = bound * bound
    for attempt in range(1, MAX_ROUNDING_ATTEMPTS + 1):
        up = uniform01(values.shape[0], random_bytes) < frac
        q = base + up.astype(np.int64)
        qf = q.astype(np.float64)
        if float(np.dot(qf, qf)) <= limit:
            return q, attempt
    raise PrivacyError(
        f"conditional rounding exceeded the L2 bound {bound:.6g} in "
        f"{MAX_ROUNDING_ATTEMPTS} attempts; beta is too small for this dimension"
    )


def to_ring(values: IntArray, bits: int) -> RingVector:
    """values mod 2^bits as uint64 in [0, 2^bits) (two's complement wrap, then mask)."""
    ring = np.asarray(values, dtype=np.int64).view(np.uint64).copy()
    if bits < 64:
        np.bitwise_and(ring, np.uint64((1 << bits) - 1), out=ring)
    return ring


def from_ring(ring: RingVector, bits: int) -> IntArray:
    """The centred representative in [-2^(bits-1), 2^(bits-1)) of each ring value."""
    shift = np.uint64(64 - bits)
    # move bit (bits - 1) to the sign bit, then shift back arithmetically (sign extension)
    signed: IntArray = (np.asarray(ring, dtype=np.uint64) << shift).view(np.int64)
    return signed >> np.int64(64 - bits)


class DistributedDpEncoder:
    """Site-side encoder and server-side decoder for one round; see the module docstring."""

    def __init__(self, layout: VectorLayout, encoding: RingEncoding) -> None:
        if not isinstance(layout, VectorLayout) or layout.size < 1:
            raise ConfigError("layout must be a VectorLayout with at least one field")
        if not isinstance(encoding, RingEncoding):
            raise ConfigError("encoding must be a RingEncoding")
        self._layout = layout
        self._encoding = encoding
        self._rotation = RandomizedHadamard(layout.size, encoding.rotation_seed)
        self._l2_clip = math.sqrt(sum(f.bound * f.bound for f in layout.fields))
        self._bound = rounded_l2_bound(self._l2_clip / encoding.scale, self.length, encoding.beta)
        if self._bound > MAX_NORM_LEVELS:
            raise ConfigError(
                f"scale {encoding.scale!r} is too small for L2 clip {self._l2_clip:.6g}: "
                f"the rounded norm bound {self._bound:.6g} exceeds 2^52 levels"
            )

    @property
    def layout(self) -> VectorLayout:
        return self._layout

    @property
    def encoding(self) -> RingEncoding:
        return self._encoding

    @property
    def rotation(self) -> RandomizedHadamard:
        return self._rotation

    @property
    def length(self) -> int:
        """padded_dim: the length of every ring vector (the SecAgg vector length)."""
        return self._rotation.padded_dim

    @property
    def l2_clip(self) -> float:
        """sqrt(sum_f B_f^2): the L2 norm bound of a clipped contribution, in float units."""
        return self._l2_clip

    @property
    def rounded_norm_bound(self) -> float:
        """Delta_2 in integer levels: the L2 sensitivity of one site's rounded vector."""
        return self._bound

    def encode(self, vector: FloatVector, *, random_bytes: RandomBytes) -> EncodedContribution:
        """Clip, rotate, scale, round, add this site's noise, reduce mod 2^bits."""
        x = self._checked_input(vector)
        clipped, names = clip_fields(self.layout, x)
        scaled = self.rotation.forward(clipped) / self.encoding.scale
        q, attempts = conditional_round(scaled, self.rounded_norm_bound, random_bytes)
        noisy = q + self._noise(random_bytes)
        ring = to_ring(noisy, self.encoding.bits)
        return EncodedContribution(ring=ring, clipped_fields=names, rounding_attempts=attempts)

    def decode(self, total: RingVector) -> FloatVector:
        """Centre the ring sum, rescale, rotate back: ``layout.size`` floats."""
        if not isinstance(total, np.ndarray) or total.dtype != np.uint64:
            raise ConfigError("ring sum must be a uint64 array")
        if total.shape != (self.length,):
            raise ConfigError(f"ring sum must have shape ({self.length},), got {total.shape}")
        bits = self.encoding.bits
        if bits < 64 and bool(np.any(total >> np.uint64(bits))):
            raise ConfigError(f"ring sum has values outside [0, 2^{bits})")
        centred = from_ring(total, bits).astype(np.float64) * self.encoding.scale
        return self.rotation.inverse(centred)

    def _checked_input(self, vector: FloatVector) -> FloatVector:
        if not isinstance(vector, np.ndarray):
            raise ConfigError("contribution must be a numpy float64 vector")
        x = np.asarray(vector, dtype=np.float64)
        if x.shape != (self.layout.size,):
            raise ConfigError(
                f"contribution has shape {x.shape}, layout needs ({self.layout.size},)"
            )
        if not np.all(np.isfinite(x)):
            raise ConfigError("contribution contains NaN or infinity")
        return x

    def _noise(self, random_bytes: RandomBytes) -> IntArray:
        std = self.encoding.local_noise_std
        if self.encoding.mechanism is NoiseKind.DISCRETE_GAUSSIAN:
            return discrete_gaussian(std, self.length, random_bytes)
        return skellam(std * std, self.length, random_bytes)
