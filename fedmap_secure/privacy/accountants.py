"""Accountant registry, default choice, and noise calibration.

Four adapters implement the ``Accountant`` protocol (``accountant_base.py``):

===================  ==========================================  ===============
name                 method                                       typical result
===================  ==========================================  ===============
dp-accounting-pld    privacy-loss distributions, pessimistic      tightest
opacus-prv           privacy-loss random variables, upper bound   ~ PLD
dp-accounting-rdp    RDP, Balle/CKS conversion                    looser
opacus-rdp           RDP, Balle 2020 or classic conversion        looser
===================  ==========================================  ===============

The default is the first accountant in ``TIGHTNESS_ORDER`` that supports every
event (today: dp-accounting PLD), with RDP (opacus-rdp) as a cross-check in
reports. Every value is an upper bound on the true epsilon, so any of them
gives a valid guarantee; tighter ones just waste less budget. Every adapter
states its epsilon under ``adjacency.RECORD_ADJACENCY`` (replace-one: site sizes
are public): PLD natively, the other three through the group-privacy
conversion of their add/remove-one analysis, which roughly doubles epsilon, so
the RDP cross-check sits well above the PLD figure (and above the budget the
PLD accountant enforces) without contradicting it.

Calibration is done *by the site* from its own budget and plan: it never uses a
noise level chosen by the server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

from dp_accounting import get_sigma_gaussian

from fedmap_secure.errors import BudgetExceededError, ConfigError, UnsupportedMechanismError
from fedmap_secure.privacy.accountant_base import Accountant, AccountantName
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import (
    DpAccountingPldAccountant,
    DpAccountingRdpAccountant,
)
from fedmap_secure.privacy.events import Event, SubsampledGaussianEvent, check_events
from fedmap_secure.privacy.opacus_accountants import OpacusPrvAccountant, OpacusRdpAccountant
from fedmap_secure.privacy.rdp_conversion import RdpConversion

__all__ = [
    "TIGHTNESS_ORDER",
    "Accountant",
    "AccountantName",
    "DpAccountingPldAccountant",
    "DpAccountingRdpAccountant",
    "OpacusPrvAccountant",
    "OpacusRdpAccountant",
    "RdpConversion",
    "calibrate_gaussian",
    "calibrate_noise_multiplier",
    "create_accountant",
    "cross_check_accountant",
    "default_accountant",
]

_FACTORIES: dict[AccountantName, Callable[[], Accountant]] = {
    AccountantName.OPACUS_RDP: OpacusRdpAccountant,
    AccountantName.OPACUS_PRV: OpacusPrvAccountant,
    AccountantName.DP_ACCOUNTING_RDP: DpAccountingRdpAccountant,
    AccountantName.DP_ACCOUNTING_PLD: DpAccountingPldAccountant,
}

TIGHTNESS_ORDER: tuple[AccountantName, ...] = (
    AccountantName.DP_ACCOUNTING_PLD,
    AccountantName.OPACUS_PRV,
    AccountantName.DP_ACCOUNTING_RDP,
    AccountantName.OPACUS_RDP,
)
"""Accountants from tightest to loosest (for the same events)."""

MAX_NOISE_MULTIPLIER = 1e4
"""Calibration gives up (budget too small for the plan) above this noise multiplier."""

MIN_NOISE_MULTIPLIER = 0.5
"""Calibration never returns less: when 0.5 already fits, it returns 0.5. More noise than
needed is always safe, and PLD accounting time and memory grow like 1/sigma^2 as sigma -> 0
(~40 s at 0.03; a score release calibrated for epsilon 1e8 asked for a 1.46 TiB array).
Callers floor every other calibrated noise multiplier (e.g. the omega release) here too."""


def create_accountant(name: AccountantName | str) -> Accountant:
    """A fresh accountant with default settings, by registry name."""
    try:
        key = AccountantName(name)
    except ValueError:
        known = ", ".join(n.value for n in AccountantName)
        raise ConfigError(f"unknown accountant {name!r} (known: {known})") from None
    return _FACTORIES[key]()


def default_accountant(events: Sequence[Event] = ()) -> Accountant:
    """The tightest accountant that supports every event in ``events``."""
    checked = check_events(events)
    for name in TIGHTNESS_ORDER:
        accountant = create_accountant(name)
        if all(accountant.supports(event) for event in checked):
            return accountant
    raise UnsupportedMechanismError("no accountant supports every event (non-DP release?)")


def cross_check_accountant() -> Accountant:
    """The RDP accountant reports show beside the default, as an independent cross-check."""
    return create_accountant(AccountantName.OPACUS_RDP)


def calibrate_noise_multiplier(
    budget: Budget,
    *,
    sample_rate: float,
    steps_per_round: int,
    rounds: int,
    extra_events: Sequence[Event] = (),
    accountant: Accountant | None = None,
    relative_tolerance: float = 1e-3,
) -> float:
    """Smallest DP-SGD noise multiplier (within ``relative_tolerance``) that fits the budget.

    Finds sigma such that composing ``rounds`` x ``steps_per_round`` Poisson-
    subsampled Gaussian steps at ``sample_rate`` with ``extra_events`` (what the
    site has already spent, plus its other planned releases, e.g. one
    contribution-score Gaussian per round) stays within ``budget.epsilon`` at
    ``budget.delta``. Epsilon is decreasing in sigma, so the answer is bracketed
    in [0.5, 2] or [2, hi] (hi: a first guess from epsilon(2) ~ 1/sigma, doubled
    until feasible, at most 1e4) and found by regula falsi on log epsilon vs log sigma
    (Illinois variant, a bisection step whenever it stalls): about five
    accountant evaluations instead of fifteen. Every epsilon evaluated is kept
    in a per-process curve cache keyed by (accountant settings, q, total steps,
    extra events, delta), so sites with the same plan share it. The returned
    value is always on the feasible side, and never below
    ``MIN_NOISE_MULTIPLIER`` (0.5), so the search and every later ledger charge
    stay bounded in time and memory for any finite budget.
    Raises ``BudgetExceededError`` when no sigma <= 1e4 fits.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds must be an int >= 1, got {rounds!r}")
    if not 0 < relative_tolerance < 0.5:
        raise ConfigError("relative_tolerance must be in (0, 0.5)")
    extra = check_events(extra_events)
    chosen = accountant if accountant is not None else default_accountant(extra)
    # Validates sample_rate and steps (raises InvalidMechanismError) before any search.
    SubsampledGaussianEvent(noise_multiplier=1.0, sample_rate=sample_rate, steps=steps_per_round)
    curve = _curve(chosen, sample_rate, steps_per_round * rounds, extra, budget.delta)
    target = budget.epsilon

    if curve.extra_epsilon() >= target:
        raise BudgetExceededError(
            f"the extra events alone already reach epsilon {target:g}: no noise multiplier fits"
        )
    # Start at sigma = 2 (cheap to evaluate; small sigmas cost ~1/sigma^2 in PLD time).
    if curve.epsilon(_START) <= target:
        if curve.epsilon(MIN_NOISE_MULTIPLIER) <= target:
            return MIN_NOISE_MULTIPLIER
        return _regula_falsi(curve, target, MIN_NOISE_MULTIPLIER, _START, relative_tolerance)
    high = _first_feasible(curve, target, rounds, steps_per_round)
    return _regula_falsi(curve, target, _START, high, relative_tolerance)


_START = 2.0


def _first_feasible(curve: _EpsilonCurve, target: float, rounds: int, steps: int) -> float:
    """A feasible sigma above 2: a guess from epsilon(2) (epsilon ~ 1/sigma), doubled."""
    guess = _START * curve.epsilon(_START) / target
    high = min(MAX_NOISE_MULTIPLIER, max(2.0 * _START, 1.1 * guess))
    while curve.epsilon(high) > target:
        if high >= MAX_NOISE_MULTIPLIER:
            raise BudgetExceededError(
                f"no noise multiplier <= {MAX_NOISE_MULTIPLIER:g} fits epsilon "
                f"{target:g} for {rounds} rounds x {steps} steps"
            )
        high = min(MAX_NOISE_MULTIPLIER, high * 2.0)
    return high


def _regula_falsi(
    curve: _EpsilonCurve, target: float, low: float, high: float, tolerance: float
) -> float:
    """Shrink [low (infeasible), high (feasible)] to ``tolerance`` (Illinois regula falsi)."""
    g_low = math.log(curve.epsilon(low) / target)
    g_high = math.log(curve.epsilon(high) / target) if curve.epsilon(high) > 0 else -math.inf
    stalled = False
    while high - low > tolerance * high:
        width = high - low
        if stalled or not math.isfinite(g_high) or g_low == g_high:
            mid = (low + high) / 2.0
        else:
            x_low, x_high = math.log(low), math.log(high)
            mid = math.exp(x_low - g_low * (x_high - x_low) / (g_high - g_low))
            margin = 0.05 * width
            mid = min(max(mid, low + margin), high - margin)
        eps = curve.epsilon(mid)
        g_mid = math.log(eps / target) if eps > 0 else -math.inf
        if g_mid <= 0:
            high, g_high = mid, g_mid
            g_low /= 2.0  # Illinois: the kept end's weight halves, so it cannot stall
        else:
            low, g_low = mid, g_mid
            g_high = g_high / 2.0 if math.isfinite(g_high) else g_high
        stalled = (high - low) > 0.5 * width
    return high


class _EpsilonCurve:
    """Epsilon of (plan at sigma) + extra events, memoised per sigma (the shared curve)."""

    def __init__(
        self,
        accountant: Accountant,
        sample_rate: float,
        total_steps: int,
        extra: tuple[Event, ...],
        delta: float,
    ) -> None:
        self._accountant = accountant
        self._sample_rate = sample_rate
        self._steps = total_steps
        self._extra = extra
        self._delta = delta
        self._points: dict[float, float] = {}
        self._extra_epsilon: float | None = None

    def extra_epsilon(self) -> float:
        if self._extra_epsilon is None:
            self._extra_epsilon = self._accountant.epsilon(self._extra, self._delta)
        return self._extra_epsilon

    def epsilon(self, sigma: float) -> float:
        if sigma not in self._points:
            plan = SubsampledGaussianEvent(
                noise_multiplier=sigma, sample_rate=self._sample_rate, steps=self._steps
            )
            self._points[sigma] = self._accountant.epsilon([*self._extra, plan], self._delta)
        return self._points[sigma]


_CURVES: dict[str, _EpsilonCurve] = {}
_MAX_CURVES = 256


def _curve(
    accountant: Accountant,
    sample_rate: float,
    total_steps: int,
    extra: tuple[Event, ...],
    delta: float,
) -> _EpsilonCurve:
    """The cached epsilon-vs-noise curve of one plan (shared by every site with that plan)."""
    key = json.dumps(
        [
            accountant.describe(),
            sample_rate,
            total_steps,
            [event.to_json() for event in extra],
            delta,
        ],
        sort_keys=True,
    )
    curve = _CURVES.get(key)
    if curve is None:
        if len(_CURVES) >= _MAX_CURVES:
            _CURVES.clear()
        curve = _CURVES[key] = _EpsilonCurve(accountant, sample_rate, total_steps, extra, delta)
    return curve


def calibrate_gaussian(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Standard deviation of the Gaussian mechanism that is exactly (epsilon, delta)-DP.

    Uses the analytic Gaussian mechanism (Balle and Wang 2018) via
    ``dp_accounting.get_sigma_gaussian``: the smallest sigma with
    Phi(S/(2 sigma) - eps sigma/S) - e^eps Phi(-S/(2 sigma) - eps sigma/S) <= delta,
    for L2 sensitivity S. For a release that is charged alongside others, record
    ``GaussianEvent(noise_multiplier=std / sensitivity)`` and let the accountant
    compose it (composition is tighter than summing per-release epsilons).
    """
    for name, value in (("epsilon", epsilon), ("sensitivity", sensitivity)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    return float(get_sigma_gaussian(epsilon, delta)) * sensitivity
