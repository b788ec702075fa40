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
gives a valid guarantee; tighter ones just waste less budget.

Calibration is done *by the site* from its own budget and plan: it never uses a
noise level chosen by the server.
"""

from __future__ import annotations

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
needed is always safe, and PLD accounting time grows quickly as sigma -> 0 (~40 s at 0.03)."""


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
    ``budget.delta``. Epsilon is decreasing in sigma, so bisection on
    [0.5, hi] with hi the first feasible power of two is exact up to the
    tolerance; the returned value is always on the feasible side, and never
    below ``MIN_NOISE_MULTIPLIER`` (0.5).
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
    total_steps = steps_per_round * rounds

    def fits(sigma: float) -> bool:
        plan = SubsampledGaussianEvent(
            noise_multiplier=sigma, sample_rate=sample_rate, steps=total_steps
        )
        return chosen.epsilon([*extra, plan], budget.delta) <= budget.epsilon

    if chosen.epsilon(extra, budget.delta) >= budget.epsilon:
        raise BudgetExceededError(
            f"the extra events alone already reach epsilon {budget.epsilon:g}: no noise "
            "multiplier fits"
        )
    high = 1.0
    while not fits(high):
        high *= 2.0
        if high > MAX_NOISE_MULTIPLIER:
            raise BudgetExceededError(
                f"no noise multiplier <= {MAX_NOISE_MULTIPLIER:g} fits epsilon "
                f"{budget.epsilon:g} for {rounds} rounds x {steps_per_round} steps"
            )
    if fits(MIN_NOISE_MULTIPLIER):
        return MIN_NOISE_MULTIPLIER
    low = MIN_NOISE_MULTIPLIER
    while high - low > relative_tolerance * high:
        mid = (low + high) / 2.0
        if fits(mid):
            high = mid
        else:
            low = mid
    return high


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
