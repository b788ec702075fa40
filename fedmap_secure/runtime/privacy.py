"""One site's privacy: its own policy, its plan for a run, its ledger, check-then-commit per round.

What a site does, all from its own policy and ledger (never from the server):

1. ``SitePolicy.check_run``: the run's announced ``[privacy]`` may ask for
   *more* protection than the site's own policy, never less. DP off while the
   site's policy has it on, a larger epsilon or delta, or seeded (reproducible)
   noise while the site wants OS noise: ``PrivacyError`` naming the setting,
   before anything is trained or released.
2. ``plan_site_privacy``: from its budget (epsilon, delta_k = min(delta,
   1/(10 n_k))), what its ledger has already spent (earlier runs), its planned
   rounds and the public run plan (steps per round, expected batch size),
   calibrate the score-release noise (``omega_release = gaussian``) and then
   the DP-SGD noise multiplier with ``calibrate_noise_multiplier`` so the
   stored events composed with the whole plan fit the budget. No noise level
   fits: ``BudgetExceededError``, the run is refused before any release.
3. ``SitePrivacyGuard.admit(round)`` before touching data in a round: charge
   the round's events durably (SQLite, fsync'd; check and insert in one
   transaction) or DECLINE (the site sends nothing: a SecAgg dropout). Only
   after the charge may the site train, score and contribute. A crash after
   the charge over-counts; it never under-counts.
4. A site whose own policy has ``enabled = false`` (explicitly, in its own
   file) and that runs a non-private run records every round as a
   ``NonPrivateRelease`` in its ledger (``Budget.allow_non_dp_releases``).

Threat addressed: a server (or anyone seeing the sums) learning about one
patient of site k beyond the (epsilon, delta) the site's own ledger proves,
including a server that announces a weaker configuration (THREAT_MODEL O2).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.privacy import OmegaRelease, PrivacyConfig
from fedmap_secure.config.schema import ScoreConfig
from fedmap_secure.data.types import SiteData
from fedmap_secure.errors import BudgetExceededError, PrivacyError
from fedmap_secure.fedmap.contribution import MeanLoglikRelease
from fedmap_secure.privacy import plan_checks
from fedmap_secure.privacy.accountants import (
    MIN_NOISE_MULTIPLIER,
    calibrate_gaussian,
    calibrate_noise_multiplier,
    create_accountant,
    cross_check_accountant,
)
from fedmap_secure.privacy.adjacency import RECORD_UNIT, SITE_SIZES
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import (
    Event,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
)
from fedmap_secure.privacy.ledger import ChargeReceipt, PrivacyLedger
from fedmap_secure.privacy.ledger_store import SqliteLedgerStore, ledger_path, open_site_ledger
from fedmap_secure.privacy.noise_source import NO_DP_GUARANTEE, NoiseSource
from fedmap_secure.privacy.report import CROSS_CHECK_NOTE
from fedmap_secure.training.dp_randomness import NoiseSourceKind

log = logging.getLogger(__name__)

CALIBRATION_TOLERANCE = 0.01
"""Relative tolerance of the noise calibration: at most 1% more noise than the minimum
that fits (always on the feasible side); 1e-3 costs twice the PLD evaluations."""

EXHAUSTED_SHARE = 0.05
"""A ledger with less than this share of its budget left is exhausted: a new run is refused
(whatever still fits would be almost pure noise)."""

AfterCharge = Callable[[str, ChargeReceipt], None]
"""Called as after_charge(site, receipt) once a charge is durable, before any release."""


def site_delta(delta: float, n_train: int) -> float:
    """delta_k = min(delta, 1 / (10 n_k)): always well below 1/n_k."""
    return min(delta, 1.0 / (10.0 * n_train))


# --- the site's own policy -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SitePolicy:
    """A site's own privacy policy: the keys of a run configuration's ``[privacy]`` table.

    ``privacy.epsilon``/``delta`` are the site's lifetime budget (its ledger's);
    ``privacy.enabled = False`` lets the site run non-private runs (recorded as
    non-private releases); ``reproducible_noise = True`` lets it accept seeded
    noise. ``source`` names where the policy came from (for error messages).
    """

    privacy: PrivacyConfig
    source: str

    def check_run(self, site: str, run: PrivacyConfig) -> None:
        """Refuse (``PrivacyError``, one line naming the setting) a run weaker than the policy."""
        own = self.privacy
        why = None
        if own.enabled and not run.enabled:
            why = "the run announces [privacy] enabled = false but this site's policy has DP on"
        elif own.enabled and run_epsilon(run, site) > own.epsilon:
            why = (
                f"the run announces [privacy] epsilon = {run_epsilon(run, site):g}, more than "
                f"this site's budget epsilon = {own.epsilon:g}"
            )
        elif own.enabled and run.delta > own.delta:
            why = (
                f"the run announces [privacy] delta = {run.delta:g}, more than this site's "
                f"delta = {own.delta:g}"
            )
        elif own.enabled and run.reproducible_noise and not own.reproducible_noise:
            why = (
                "the run announces [privacy] reproducible_noise = true (seeded, not secret "
                "noise) but this site's policy wants OS noise"
            )
        if why is not None:
            raise PrivacyError(
                f"site {site!r} refuses the run and releases nothing: {why} ({self.source}; "
                "set it in the site's own [privacy] table to accept)"
            )

    def effective(self, site: str, run: PrivacyConfig) -> PrivacyConfig:
        """The privacy this site runs with: the run's public plan under the site's budget.

        DP is on when either side asks for it; the budget (epsilon, delta,
        accountant) is the site's own when its policy has DP on; noise is seeded
        only when both allow it.
        """
        own = self.privacy
        if not own.enabled:
            return run if run.enabled else own
        return dataclasses.replace(
            run,
            enabled=True,
            epsilon=own.epsilon,
            delta=own.delta,
            accountant=own.accountant,
            reproducible_noise=run.reproducible_noise and own.reproducible_noise,
            site=tuple(dataclasses.replace(o, epsilon=None) for o in run.site if o.site == site),
        )


def run_epsilon(run: PrivacyConfig, site: str) -> float:
    """The epsilon the run plans for ``site`` (its ``[[privacy.site]]`` override, if any)."""
    override = run.override_for(site)
    return override.epsilon if override and override.epsilon else run.epsilon


def simulated_policy(run: PrivacyConfig, site: str, source: str) -> SitePolicy:
    """The policy of a simulated site: the run's own ``[privacy]`` with this site's override."""
    return SitePolicy(
        privacy=dataclasses.replace(run, epsilon=run_epsilon(run, site), site=()), source=source
    )


# --- the plan of one run ---------------------------------------------------------------------


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
    warnings: tuple[str, ...] = ()

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
            "n_train": self.n_train,
            "warnings": list(self.warnings),
        }


def plan_site_privacy(
    site: SiteData,
    privacy: PrivacyConfig,
    rounds: int,
    *,
    spent: Sequence[Event] = (),
    run_epsilon: float | None = None,
) -> SitePrivacyPlan:
    """Calibrate a site's noise from its own budget minus ``spent`` (see the module docstring).

    ``run_epsilon`` (the run's announced epsilon, when below the site's budget):
    the plan on its own also stays within it, so a run spends at most what it
    announced and the rest of the budget is left for later runs.
    Raises ``BudgetExceededError`` naming the site when even the largest noise
    cannot fit its plan (composed with ``spent``) into its budget.
    """
    override = privacy.override_for(site.name)
    epsilon = override.epsilon if override and override.epsilon else privacy.epsilon
    planned = override.planned_rounds if override and override.planned_rounds else rounds
    try:
        plan = _calibrated_plan(
            site.n_train,
            epsilon,
            planned,
            _calibration_inputs(privacy),
            tuple(spent),
            min(epsilon, run_epsilon or epsilon),
        )
    except BudgetExceededError as exc:
        already = f" after the {len(spent)} event(s) its ledger holds" if spent else ""
        raise BudgetExceededError(
            f"site {site.name!r}: budget epsilon {epsilon:g} is too small to run even{already} its "
            f"plan of {planned} round(s) x {privacy.steps_per_round} DP-SGD steps ({exc}); "
            "the run is refused before any release"
        ) from None
    notes = (
        plan_checks.delta_note(site.name, privacy.delta, plan.budget.delta, site.n_train),
        plan_checks.noise_note(
            site.name, epsilon, plan.noise_multiplier, privacy.expected_batch_size
        ),
        plan_checks.floor_note(site.name, epsilon, plan.noise_multiplier, MIN_NOISE_MULTIPLIER),
        plan_checks.single_class_note(site.name, len(set(site.y_train.tolist()))),
    )
    warnings = tuple(note for note in notes if note is not None)
    for note in warnings:
        log.warning("%s", note)
    return dataclasses.replace(plan, site=site.name, warnings=warnings)


def _calibration_inputs(privacy: PrivacyConfig) -> PrivacyConfig:
    """Only the fields calibration depends on (a better cache key)."""
    return dataclasses.replace(
        privacy, enabled=True, reproducible_noise=False, site=(), epsilon=1.0
    )


@functools.lru_cache(maxsize=256)
def _calibrated_plan(
    n: int,
    epsilon: float,
    planned: int,
    privacy: PrivacyConfig,
    spent: tuple[Event, ...],
    run_epsilon: float,
) -> SitePrivacyPlan:
    """The calibration: a pure function of public plan parameters (cached per process).

    The plan alone fits ``run_epsilon``; composed with ``spent`` it fits the
    site's budget ``epsilon``: the noisier of the two calibrations is used.
    """
    budget = Budget(epsilon=epsilon, delta=site_delta(privacy.delta, n))
    sample_rate = min(1.0, privacy.expected_batch_size / n)
    omega: tuple[Event, ...] = ()
    omega_sigma = None
    if privacy.omega_release is OmegaRelease.GAUSSIAN:
        # `planned` Gaussian releases at multiplier s compose to one at s / sqrt(planned).
        single = calibrate_gaussian(run_epsilon * privacy.omega_epsilon_share, budget.delta)
        # never below the floor: a near-noiseless release (a huge budget) would make every
        # later PLD composition unbounded in memory; more noise is always safe
        omega_sigma = max(single * math.sqrt(planned), MIN_NOISE_MULTIPLIER)
        omega = (GaussianEvent(noise_multiplier=omega_sigma, count=planned),)

    def calibrate(target: Budget, extra: tuple[Event, ...]) -> float:
        return calibrate_noise_multiplier(
            target,
            sample_rate=sample_rate,
            steps_per_round=privacy.steps_per_round,
            rounds=planned,
            extra_events=extra,
            accountant=create_accountant(privacy.accountant),
            relative_tolerance=CALIBRATION_TOLERANCE,
        )

    sigma = calibrate(dataclasses.replace(budget, epsilon=run_epsilon), omega)
    if spent or run_epsilon < epsilon:
        sigma = max(sigma, calibrate(budget, (*spent, *omega)))
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


# --- the per-round gate ----------------------------------------------------------------------


class SitePrivacyGuard:
    """Check-then-commit of one site's per-round charge against its own ledger."""

    def __init__(
        self,
        plan: SitePrivacyPlan,
        ledger: PrivacyLedger,
        *,
        after_charge: AfterCharge | None = None,
        note: str = "",
    ) -> None:
        self.plan = plan
        self.ledger = ledger
        self._after_charge = after_charge
        self._run_note = note
        self.declined_rounds: list[int] = []
        self.last_receipt: ChargeReceipt | None = None

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
        self.last_receipt = receipt
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
        return note + (f"; {self._run_note}" if self._run_note else "")


# --- everything a private site needs for one run ---------------------------------------------


class SitePrivacy:
    """A training site's privacy for one run: plan, ledger, guard, DP noise choice.

    ``open`` plans against the ledger in ``state_dir`` (created if absent,
    continued if present); ``close()`` the ledger after use.
    """

    def __init__(
        self, *, site: str, privacy: PrivacyConfig, guard: SitePrivacyGuard, noise_seed: int | None
    ) -> None:
        self.site = site
        self.privacy = privacy
        self.guard = guard
        self.noise_seed = noise_seed

    @classmethod
    def open(
        cls,
        *,
        site: SiteData,
        privacy: PrivacyConfig,
        rounds: int,
        state_dir: Path,
        noise_seed: int | None,
        after_charge: AfterCharge | None = None,
        note: str = "",
        run_epsilon: float | None = None,
    ) -> SitePrivacy:
        budget = Budget(epsilon=privacy.epsilon, delta=site_delta(privacy.delta, site.n_train))
        ledger = open_site_ledger(
            state_dir,
            budget=budget,
            accountant=create_accountant(privacy.accountant),
            cross_check=cross_check_accountant(),
            noise_source=(
                NoiseSource.SEEDED if privacy.reproducible_noise else NoiseSource.OS_CSPRNG
            ),
        )
        try:
            spent = stored_events(state_dir)
            if spent and ledger.remaining() < EXHAUSTED_SHARE * budget.epsilon:
                raise BudgetExceededError(
                    f"site {site.name!r}: its ledger has spent epsilon {ledger.spent():.4g} of "
                    f"{budget.epsilon:g}; the budget is exhausted and the run is refused before "
                    "any release"
                )
            plan = plan_site_privacy(site, privacy, rounds, spent=spent, run_epsilon=run_epsilon)
        except BaseException:
            ledger.close()
            raise
        if spent:
            log.info(
                "site %s continues its ledger: epsilon %.4g of %.4g spent before this run",
                site.name,
                ledger.spent(),
                budget.epsilon,
            )
        guard = SitePrivacyGuard(plan, ledger, after_charge=after_charge, note=note)
        return cls(site=site.name, privacy=privacy, guard=guard, noise_seed=noise_seed)

    @property
    def plan(self) -> SitePrivacyPlan:
        return self.guard.plan

    @property
    def ledger(self) -> PrivacyLedger:
        return self.guard.ledger

    def close(self) -> None:
        self.guard.ledger.close()

    def admit(self, round_index: int) -> bool:
        return self.guard.admit(round_index)

    def score_release(self, n_public: int, score: ScoreConfig | None = None) -> MeanLoglikRelease:
        """The site's DP release of the mean log-likelihood in its score (or the constant 0).

        ``score`` (the run's ``[score]``): ``dp_loglik_clip`` bounds B of the release
        (noise std sigma * B / n; the charged event is the same noise multiplier) and
        ``dp_shrinkage`` shrinks the noisy mean toward the declared prior by its public
        noise level (``shrink_noisy_mean``): both are safe whoever sets them.
        """
        from fedmap_secure.training.dp_score import release_mean_loglik, shrink_noisy_mean
        from fedmap_secure.training.secure_noise import CsprngStream, SecureGaussian

        sigma = self.plan.omega_noise_multiplier
        if sigma is None:
            return _uniform_release
        seed = self.noise_seed
        stream = (
            CsprngStream.os()
            if seed is None
            else CsprngStream.seeded(seed, label=f"{self.site}/omega")
        )
        source = SecureGaussian(stream)

        opts = score if score is not None else ScoreConfig()

        def release(per_sample_loglik: FloatVector, clip: float) -> float:
            bound = min(clip, opts.dp_loglik_clip)
            mean = release_mean_loglik(
                per_sample_loglik,
                clip=bound,
                noise_multiplier=sigma,
                public_n=n_public,
                random=source,
                clamp=not opts.dp_shrinkage,
            )
            if not opts.dp_shrinkage:
                return mean
            return shrink_noisy_mean(
                mean,
                noise_std=sigma * bound / n_public,
                prior_mean=opts.dp_prior_mean,
                prior_sd=opts.dp_prior_sd,
                clip=bound,
            )

        return release

    def describe_site(self) -> dict[str, Any]:
        """This site's entry of ``privacy.differential_privacy.sites`` (spent from its ledger)."""
        ledger = self.ledger
        return {
            **self.plan.describe(),
            "epsilon_spent": ledger.spent(),
            "cross_check_epsilon": ledger.cross_check_epsilon(),
            "cross_check_note": CROSS_CHECK_NOTE,
            "declined_rounds": list(self.guard.declined_rounds),
        }

    def describe(self) -> dict[str, Any]:
        """summary.json's ``privacy.differential_privacy`` as this site sees it."""
        return describe_differential_privacy(self.privacy, {self.site: self.describe_site()})


def describe_differential_privacy(
    privacy: PrivacyConfig, sites: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """``privacy.differential_privacy`` of summary.json from the sites' own entries."""
    p = privacy
    reproducible = p.reproducible_noise
    kind = NoiseSourceKind.SEEDED_CHACHA20 if reproducible else NoiseSourceKind.OS_CSPRNG
    return {
        "unit": RECORD_UNIT,
        "site_sizes": SITE_SIZES,
        "guarantee": NO_DP_GUARANTEE
        if reproducible
        else "each site: (epsilon_spent, delta_k)-DP, " + RECORD_UNIT,
        "dp_guarantee": not reproducible,
        "accountant": create_accountant(p.accountant).describe(),
        "cross_check_accountant": cross_check_accountant().describe(),
        "target_epsilon": p.epsilon,
        "delta": p.delta,
        "delta_rule": "each site uses min(delta, 1/(10 n_train)); 'warnings' per site "
        "says when that is below the configured delta",
        "clipping_bound": p.max_grad_norm,
        "expected_batch_size": p.expected_batch_size,
        "steps_per_round": p.steps_per_round,
        "early_stopping": False,
        "omega_release": p.omega_release.value,
        "omega_epsilon_share": p.omega_epsilon_share,
        "sites": sites,
        "non_private_sites": "the unseen tier releases nothing; the fine-tune tier trains its "
        "personalised model under its own policy after training (DP-SGD charged to its own "
        "ledger, nothing sent to the server); with --method local no site releases anything",
        "noise_source": kind.value,
        "noise_hardening": "sum of four Gaussians (Holohan and Braghin 2021)",
        "reproducible": reproducible,
        "reproducibility_note": (
            "DP noise from a ChaCha20 stream seeded by the run seed: reproducible, NOT secret"
            if reproducible
            else "DP noise from the OS CSPRNG: not reproducible, even with --seed"
        ),
        "metrics_released": False,
        "outputs": OUTPUTS,
    }


OUTPUTS = {
    "site_local": [
        "metrics.csv (per-site non-DP training losses and test metrics)",
        "summary.json sites[*] metrics, per-site omega and this privacy section's per-site "
        "warnings (one process plays every site in a simulation)",
        "sites/<site>/ (the site's ledgers) and site-records/<site>/",
    ],
    "shareable": [
        "the global model gamma and prior psi (post-processing of DP secure sums)",
        "each site's own ledger report (fedmap-secure ledger show), if the site chooses",
        "transcripts/ and roster.json (digests and public keys only)",
    ],
    "note": "a simulation writes every site's local outputs into one OUT; in a deployment "
    "each stays at its site: the server and the other sites receive only secure sums",
}
"""Which per-run outputs stay at the site and which may be shared (summary.json ``outputs``)."""


def stored_events(state_dir: Path) -> tuple[Event, ...]:
    """Every event a site's ledger holds (earlier runs included), in order."""
    store = SqliteLedgerStore(ledger_path(state_dir), create=False)
    try:
        return tuple(e for charge in store.load() for e in charge.events)
    finally:
        store.close()


def _uniform_release(per_sample_loglik: FloatVector, clip: float) -> float:
    """Data-independent score: the mean log-likelihood term is the constant 0."""
    return 0.0


def non_private_ledger(state_dir: Path, policy: PrivacyConfig, n_train: int) -> PrivacyLedger:
    """The ledger of a site whose own policy allows non-private runs (it records them)."""
    budget = Budget(
        epsilon=policy.epsilon,
        delta=site_delta(policy.delta, n_train),
        allow_non_dp_releases=True,
    )
    return open_site_ledger(
        state_dir, budget=budget, accountant=create_accountant(policy.accountant)
    )


def charge_non_private(ledger: PrivacyLedger, round_index: int, what: str) -> None:
    """Record a non-private release (flagged in every report) before it leaves the site."""
    ledger.charge(
        round_index,
        (NonPrivateRelease(description=what),),
        note="non-private round: the site's own policy has [privacy] enabled = false",
    )
