"""One training site's privacy: its own plan, its own ledger, check-then-commit per round.

What a site does, all from its own configuration (never from the server):

1. ``plan_site_privacy``: from its budget (epsilon, delta_k = min(delta,
   1/(10 n_k))), its planned rounds and the public run plan (steps per round,
   expected batch size), calibrate the score-release noise (when
   ``omega_release = gaussian``) and then the DP-SGD noise multiplier with
   ``calibrate_noise_multiplier``, so the whole plan fits the budget.
2. ``SitePrivacyGuard.admit(round)`` before touching data in a round: compute
   epsilon after this round's events (DP-SGD steps + one score release); if it
   would exceed the budget, DECLINE (the site sends nothing: a SecAgg dropout).
   Otherwise charge the ledger durably (SQLite, fsync'd; check and insert in one
   transaction) and only then let the site train, score and contribute. A crash
   after the charge over-counts; it never under-counts.

Threat addressed: a server (or anyone seeing the sums) learning about one
patient of site k beyond the (epsilon, delta) the site's own ledger proves.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from fedmap_secure.config.privacy import OmegaRelease, PrivacyConfig
from fedmap_secure.data.types import SiteData
from fedmap_secure.errors import BudgetExceededError
from fedmap_secure.privacy.accountants import (
    calibrate_gaussian,
    calibrate_noise_multiplier,
    create_accountant,
)
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import Event, GaussianEvent, SubsampledGaussianEvent
from fedmap_secure.privacy.ledger import ChargeReceipt, PrivacyLedger

log = logging.getLogger(__name__)

CALIBRATION_TOLERANCE = 0.01
"""Relative tolerance of the noise calibration: at most 1% more noise than the minimum
that fits (always on the feasible side); 1e-3 costs twice the PLD evaluations."""

AfterCharge = Callable[[str, ChargeReceipt], None]
"""Called as after_charge(site, receipt) once a charge is durable, before any release."""


def site_delta(delta: float, n_train: int) -> float:
    """delta_k = min(delta, 1 / (10 n_k)): always well below 1/n_k."""
    return min(delta, 1.0 / (10.0 * n_train))


@dataclass(frozen=True, kw_only=True)
class SitePrivacyPlan:
    """What one training site will release per round, fixed before round 0."""

    site: str
    n_train: int
    budget: Budget
    planned_rounds: int
    sample_rate: float
    steps_per_round: int
    noise_multiplier: float
    max_grad_norm: float
    omega_release: OmegaRelease
    omega_noise_multiplier: float | None

    def round_events(self) -> tuple[Event, ...]:
        """The mechanisms of one round: DP-SGD steps, then (gaussian mode) one score release."""
        events: list[Event] = [
            SubsampledGaussianEvent(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.sample_rate,
                steps=self.steps_per_round,
            )
        ]
        if self.omega_noise_multiplier is not None:
            events.append(GaussianEvent(noise_multiplier=self.omega_noise_multiplier, count=1))
        return tuple(events)

    def describe(self) -> dict[str, object]:
        return {
            "epsilon_budget": self.budget.epsilon,
            "delta": self.budget.delta,
            "planned_rounds": self.planned_rounds,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps_per_round": self.steps_per_round,
            "clipping_bound": self.max_grad_norm,
            "omega_noise_multiplier": self.omega_noise_multiplier,
        }


def plan_site_privacy(site: SiteData, privacy: PrivacyConfig, rounds: int) -> SitePrivacyPlan:
    """Calibrate a site's noise from its own budget (see the module docstring).

    Raises ``BudgetExceededError`` naming the site when even the largest noise
    cannot fit its plan into its budget.
    """
    override = privacy.override_for(site.name)
    epsilon = override.epsilon if override and override.epsilon else privacy.epsilon
    planned = override.planned_rounds if override and override.planned_rounds else rounds
    try:
        plan = _calibrated_plan(site.n_train, epsilon, planned, privacy)
    except BudgetExceededError as exc:
        raise BudgetExceededError(
            f"site {site.name!r}: budget epsilon {epsilon:g} is too small to run even its "
            f"plan of {planned} round(s) x {privacy.steps_per_round} DP-SGD steps ({exc}); "
            "raise --epsilon or lower the rounds/steps"
        ) from None
    return dataclasses.replace(plan, site=site.name)


@functools.lru_cache(maxsize=256)
def _calibrated_plan(
    n: int, epsilon: float, planned: int, privacy: PrivacyConfig
) -> SitePrivacyPlan:
    """The calibration: a pure function of public plan parameters (cached per process)."""
    budget = Budget(epsilon=epsilon, delta=site_delta(privacy.delta, n))
    sample_rate = min(1.0, privacy.expected_batch_size / n)
    extra: tuple[Event, ...] = ()
    omega_sigma = None
    if privacy.omega_release is OmegaRelease.GAUSSIAN:
        # `planned` Gaussian releases at multiplier s compose to one at s / sqrt(planned).
        single = calibrate_gaussian(epsilon * privacy.omega_epsilon_share, budget.delta)
        omega_sigma = single * math.sqrt(planned)
        extra = (GaussianEvent(noise_multiplier=omega_sigma, count=planned),)
    sigma = calibrate_noise_multiplier(
        budget,
        sample_rate=sample_rate,
        steps_per_round=privacy.steps_per_round,
        rounds=planned,
        extra_events=extra,
        accountant=create_accountant(privacy.accountant),
        relative_tolerance=CALIBRATION_TOLERANCE,
    )
    return SitePrivacyPlan(
        site="",
        n_train=n,
        budget=budget,
        planned_rounds=planned,
        sample_rate=sample_rate,
        steps_per_round=privacy.steps_per_round,
        noise_multiplier=sigma,
        max_grad_norm=privacy.max_grad_norm,
        omega_release=privacy.omega_release,
        omega_noise_multiplier=omega_sigma,
    )


class SitePrivacyGuard:
    """Check-then-commit of one site's per-round charge against its own ledger."""

    def __init__(
        self,
        plan: SitePrivacyPlan,
        ledger: PrivacyLedger,
        *,
        after_charge: AfterCharge | None = None,
    ) -> None:
        self.plan = plan
        self.ledger = ledger
        self._after_charge = after_charge
        self.declined_rounds: list[int] = []

    def admit(self, round_index: int) -> bool:
        """Charge this round's events durably and return True, or decline (False).

        ``PrivacyLedger.charge`` is the check-then-commit: inside one write
        transaction it recomputes epsilon over the stored events plus this
        round's and either commits (fsync) or raises ``BudgetExceededError``
        having written nothing, in which case the site declines.
        """
        try:
            receipt = self.ledger.charge(round_index, self.plan.round_events(), note=self._note())
        except BudgetExceededError as exc:
            return self._decline(round_index, str(exc))
        if self._after_charge is not None:
            self._after_charge(self.plan.site, receipt)
        return True

    def _decline(self, round_index: int, why: str) -> bool:
        self.declined_rounds.append(round_index)
        log.warning(
            "site %s DECLINES round %d (it sends nothing; secure aggregation treats it as "
            "a dropout): %s",
            self.plan.site,
            round_index,
            why,
        )
        return False

    def _note(self) -> str:
        note = f"DP-SGD training, {self.plan.steps_per_round} steps"
        if self.plan.omega_noise_multiplier is not None:
            note += "; omega score release"
        return note
