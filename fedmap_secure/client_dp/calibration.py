"""Calibration and setup checks of client-level distributed DP (sans-I/O).

Given the public round parameters, ``plan_client_dp`` finds the smallest
noise for which ``rounds`` rounds stay within the client-level budget, then
checks that the noisy sum fits the ring. Everything here is public: every site
and the server compute the same plan from the same configuration.

Notation (float units unless stated): c is the L2 clip of one site's whole
contribution (sqrt of the sum of its fields' squared clip norms), d the padded
dimension, n the most sites that can contribute (the roster), m the fewest
*honest* noise shares a completed round can contain, s the per-site noise std
in integer levels (``local_noise_std``) and g the scale (one level = g).

1. **Worst-case noise.** SecAgg completes a round only with at least t
   survivors, and up to c_corrupt of them may collude with the server (their
   noise shares are known to it), so m = t - c_corrupt. The guarantee is
   computed for exactly m shares; every extra honest survivor only adds noise.
2. **Scale.** For a total-noise multiplier z (std of the m honest shares' sum
   divided by c), g = z c / (sqrt(m) s): the noise is always s levels per site,
   and the signal c / g levels, so z trades privacy for utility while the ring
   usage stays fixed.
3. **Sensitivity after rounding.** Delta_2 = ``rounded_l2_bound(c / g, d, beta)``
   (conditional stochastic rounding, Kairouz et al. 2021, Prop. 22) and
   Delta_1 = Delta_2 * min(sqrt(d), Delta_2) (integer vectors).
4. **Accounting.** One round is a ``DistributedDiscreteGaussianEvent`` or
   ``DistributedSkellamEvent`` (Delta_1, Delta_2, s, m, d); ``rounds`` of them
   are composed by dp-accounting's RDP accountant; z is found by bisection
   (epsilon decreases in z) to the smallest value within the budget.
5. **No wrap-around.** Every coordinate of the ring sum over up to n sites is
   Y + R + Z: the rotated scaled signal (|Y| <= a with probability
   >= 1 - 2 exp(-a^2 d / (2 (n c / g)^2)) by Hoeffding over the random signs),
   rounding (|R| < n) and noise of n shares (discrete Gaussian: s^2-subgaussian,
   Canonne et al. 2020; Skellam: Bernstein with unit jumps). The plan refuses
   unless a + n + b <= 2^(bits-1) - 1 for a, b whose union bound over the d
   coordinates is at most ``max_wrap_probability`` per round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedmap_secure.client_dp.encoding import NoiseKind, RingEncoding, rounded_l2_bound
from fedmap_secure.errors import ConfigError
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.events import (
    ClientLevelEvent,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
)

_BISECTION_STEPS = 60
_Z_MAX = 1e6


@dataclass(frozen=True, kw_only=True)
class ClientDpProblem:
    """The public inputs of a calibration (validated on construction)."""

    mechanism: NoiseKind
    epsilon: float
    delta: float
    rounds: int
    l2_clip: float
    dimension: int
    max_summands: int
    noise_shares: int
    bits: int
    beta: float
    local_noise_std: float
    max_wrap_probability: float

    def __post_init__(self) -> None:
        for name in ("epsilon", "l2_clip", "local_noise_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"client-level DP: {name} must be finite and > 0, got {value!r}")
        if not 0 < self.delta < 1 or not 0 < self.max_wrap_probability < 1:
            raise ConfigError("client-level DP: delta and max_wrap_probability must be in (0, 1)")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"client-level DP: beta must be in [0, 1), got {self.beta!r}")
        if self.rounds < 1 or self.dimension < 1 or self.max_summands < 1:
            raise ConfigError("client-level DP: rounds, dimension and max_summands must be >= 1")
        if not 1 <= self.noise_shares <= self.max_summands:
            raise ConfigError(
                f"client-level DP needs at least one honest noise share in every completed "
                f"round; the secure-aggregation threat model leaves {self.noise_shares} "
                "(threshold t minus the declared corrupt sites): lower corrupt_fraction or "
                "raise t"
            )
        if not 8 <= self.bits <= 64:
            raise ConfigError(f"client-level DP: bits must be in [8, 64], got {self.bits}")


@dataclass(frozen=True, kw_only=True)
class ClientDpPlan:
    """A calibrated client-level mechanism: what every site and the server use each round."""

    problem: ClientDpProblem
    noise_multiplier: float
    scale: float
    l2_sensitivity: float
    l1_sensitivity: float
    epsilon: float
    wrap_probability: float

    def event(self, count: int = 1) -> ClientLevelEvent:
        """The ledger event of ``count`` rounds."""
        return _event(self.problem, self.l2_sensitivity, self.l1_sensitivity, count)

    def encoding(self, rotation_seed: bytes) -> RingEncoding:
        p = self.problem
        return RingEncoding(
            mechanism=p.mechanism,
            bits=p.bits,
            scale=self.scale,
            local_noise_std=p.local_noise_std,
            beta=p.beta,
            rotation_seed=rotation_seed,
        )

    @property
    def aggregate_noise_std(self) -> float:
        """Std (float units) per coordinate of the noise in a sum with exactly m honest shares."""
        return self.noise_multiplier * self.problem.l2_clip

    def describe(self) -> dict[str, Any]:
        p = self.problem
        return {
            "mechanism": p.mechanism.value,
            "target_epsilon": p.epsilon,
            "delta": p.delta,
            "planned_rounds": p.rounds,
            "planned_epsilon": self.epsilon,
            "l2_clip": p.l2_clip,
            "padded_dimension": p.dimension,
            "noise_shares_guaranteed": p.noise_shares,
            "max_summands": p.max_summands,
            "noise_multiplier": self.noise_multiplier,
            "aggregate_noise_std": self.aggregate_noise_std,
            "local_noise_std_levels": p.local_noise_std,
            "scale": self.scale,
            "l2_sensitivity_levels": self.l2_sensitivity,
            "l1_sensitivity_levels": self.l1_sensitivity,
            "beta": p.beta,
            "bits": p.bits,
            "wrap_probability_bound_per_round": self.wrap_probability,
        }


def _event(problem: ClientDpProblem, l2: float, l1: float, count: int) -> ClientLevelEvent:
    kind = (
        DistributedDiscreteGaussianEvent
        if problem.mechanism is NoiseKind.DISCRETE_GAUSSIAN
        else DistributedSkellamEvent
    )
    return kind(
        l2_sensitivity=l2,
        l1_sensitivity=l1,
        local_noise_std=problem.local_noise_std,
        noise_shares=problem.noise_shares,
        dimension=problem.dimension,
        count=count,
    )


def _sensitivities(problem: ClientDpProblem, scale: float) -> tuple[float, float]:
    l2 = rounded_l2_bound(problem.l2_clip / scale, problem.dimension, problem.beta)
    return l2, l2 * min(math.sqrt(problem.dimension), l2)


def _scale(problem: ClientDpProblem, z: float) -> float:
    return z * problem.l2_clip / (math.sqrt(problem.noise_shares) * problem.local_noise_std)


def planned_epsilon(problem: ClientDpProblem, z: float) -> float:
    """Epsilon after ``problem.rounds`` rounds at total-noise multiplier ``z``."""
    l2, l1 = _sensitivities(problem, _scale(problem, z))
    event = _event(problem, l2, l1, problem.rounds)
    return DpAccountingRdpAccountant().epsilon([event], problem.delta)


def _calibrate(problem: ClientDpProblem) -> float:
    low, high = 1e-3, 1.0
    while planned_epsilon(problem, high) > problem.epsilon:
        low, high = high, high * 2
        if high > _Z_MAX:
            raise ConfigError(
                f"client-level DP: epsilon {problem.epsilon} is out of reach for {problem.rounds} "
                f"rounds (noise multiplier above {_Z_MAX:g})"
            )
    for _ in range(_BISECTION_STEPS):
        mid = math.sqrt(low * high)
        if planned_epsilon(problem, mid) > problem.epsilon:
            low = mid
        else:
            high = mid
        if high / low < 1.0 + 1e-6:
            break
    return high


def _noise_tail(problem: ClientDpProblem, b: float) -> float:
    """P(|sum of n noise shares| >= b) for one coordinate (see module docstring, step 5)."""
    variance = problem.max_summands * problem.local_noise_std**2
    if problem.mechanism is NoiseKind.DISCRETE_GAUSSIAN:
        return 2.0 * math.exp(-(b * b) / (2.0 * variance))
    return 2.0 * math.exp(-(b * b) / (2.0 * (variance + b / 3.0)))


def wrap_probability(problem: ClientDpProblem, scale: float) -> float:
    """Union bound on P(some coordinate of one round's ring sum leaves the centred range)."""
    d, n = problem.dimension, problem.max_summands
    signal = n * problem.l2_clip / scale  # L2 norm bound of the summed scaled signal
    headroom = 2.0 ** (problem.bits - 1) - 1 - n
    a = signal * math.sqrt(2.0 * math.log(4.0 * d / problem.max_wrap_probability) / d)
    b = headroom - a
    if b <= 0:
        return 1.0
    signal_tail = 2.0 * math.exp(-(a * a) * d / (2.0 * signal * signal))
    return min(1.0, d * (signal_tail + _noise_tail(problem, b)))


def plan_client_dp(problem: ClientDpProblem) -> ClientDpPlan:
    """Calibrate the noise for the budget and check the ring; ``ConfigError`` if impossible."""
    z = _calibrate(problem)
    scale = _scale(problem, z)
    wrap = wrap_probability(problem, scale)
    if wrap > problem.max_wrap_probability:
        raise ConfigError(
            f"client-level DP does not fit the {problem.bits}-bit ring: wrap-around probability "
            f"bound {wrap:.3g} per round > max_wrap_probability "
            f"{problem.max_wrap_probability:g}; raise secagg.bits or lower "
            "client_dp.local_noise_std"
        )
    l2, l1 = _sensitivities(problem, scale)
    return ClientDpPlan(
        problem=problem,
        noise_multiplier=z,
        scale=scale,
        l2_sensitivity=l2,
        l1_sensitivity=l1,
        epsilon=planned_epsilon(problem, z),
        wrap_probability=wrap,
    )
