"""Differential privacy of a whole simulated run: every training site's plan, ledger and guard.

Which sites are private, and why:

- Training-tier sites release (through secure aggregation) omega-weighted
  models, ICNN gradients and prior values every round. Each trains with
  DP-SGD (``DpSgdMapTrainer``, prior gradient added after the noise) under its
  own calibrated noise, releases omega's data term by the Gaussian mechanism
  (or not at all, ``omega_release = uniform``) and charges its own ledger under
  OUT/sites/<site>/ before every round (``SitePrivacyGuard``).
- Fine-tune-tier sites only receive (gamma, psi); their trained model and
  score never leave the site, so they release nothing and train with the
  non-private trainer (epsilon_spent 0). Unseen sites never train.
- With ``--method local`` no site releases anything: no DP training, no charge.
- Test metrics stay at each site (``metrics_released: false``): the simulation
  prints them as every site's own view, in one place because one process
  plays all the sites.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmap_secure.config.privacy import OmegaRelease, PrivacyConfig
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.private_site import (
    AfterCharge,
    SitePrivacyGuard,
    SitePrivacyPlan,
    plan_site_privacy,
)
from fedmap_secure.experiments.simulation import ScoreReleaseFactory, TrainerFactory, derived_seed
from fedmap_secure.fedmap.contribution import MeanLoglikRelease, exact_clipped_mean
from fedmap_secure.privacy.accountants import create_accountant, cross_check_accountant
from fedmap_secure.privacy.ledger import PrivacyLedger
from fedmap_secure.privacy.ledger_store import open_site_ledger
from fedmap_secure.training.dp_config import DpSgdConfig
from fedmap_secure.training.dp_randomness import NoiseSourceKind
from fedmap_secure.training.dp_score import release_mean_loglik
from fedmap_secure.training.dp_training import DpSgdMapTrainer
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer
from fedmap_secure.training.secure_noise import CsprngStream, SecureGaussian

SITES_DIR = "sites"


def site_state_dir(out_dir: Path, site: str) -> Path:
    return out_dir / SITES_DIR / site


def _private_sites(config: SimulationConfig, dataset: FederatedDataset) -> list[SiteData]:
    if config.method is Method.LOCAL:
        return []
    return [s for s in dataset.by_tier(Tier.TRAIN) if s.n_train > 0]


class PrivateRun:
    """The DP side of a simulation (see module docstring); close() the ledgers after use."""

    def __init__(
        self,
        *,
        config: SimulationConfig,
        guards: Mapping[str, SitePrivacyGuard],
    ) -> None:
        self._config = config
        self._privacy = config.privacy
        self.guards = dict(guards)
        self._trainers: dict[str, DpSgdMapTrainer] = {}

    @classmethod
    def open(
        cls,
        config: SimulationConfig,
        dataset: FederatedDataset,
        out_dir: Path,
        *,
        after_charge: AfterCharge | None = None,
    ) -> PrivateRun:
        """Plan every private site and open its fresh ledger under ``out_dir``/sites/<site>."""
        sites = _private_sites(config, dataset)
        unknown = sorted({o.site for o in config.privacy.site} - {s.name for s in sites})
        if unknown:
            raise ConfigError(f"privacy.site names sites that are not private here: {unknown}")
        scores = config.method is Method.FEDMAP
        privacy = config.privacy
        if not scores:
            privacy = dataclasses.replace(privacy, omega_release=OmegaRelease.UNIFORM)
        for site in sites:
            state = site_state_dir(out_dir, site.name)
            if state.exists():
                raise ConfigError(
                    f"site state directory {str(state)!r} already exists: its ledger would keep "
                    "spending an earlier run's budget; choose a new --out or remove it"
                )
        plans = [plan_site_privacy(s, privacy, config.rounds) for s in sites]
        run = cls(config=config, guards={})
        try:
            for plan in plans:
                run.guards[plan.site] = SitePrivacyGuard(
                    plan, _open_ledger(out_dir, plan, privacy), after_charge=after_charge
                )
        except BaseException:
            run.close()
            raise
        return run

    def close(self) -> None:
        for guard in self.guards.values():
            guard.ledger.close()

    # --- what the engine plugs in -------------------------------------------------
    def admit(self, site: str, round_index: int) -> bool:
        """The engine's round gate: True for non-private sites, else check-then-commit."""
        guard = self.guards.get(site)
        return True if guard is None else guard.admit(round_index)

    def trainer_factory(self) -> TrainerFactory:
        def factory(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
            guard = self.guards.get(site.name)
            if guard is None:
                return AdamMapTrainer(training)
            trainer = DpSgdMapTrainer(
                self._dp_config(guard.plan, training), stream_label=f"{site.name}/dp-sgd"
            )
            planned = trainer.planned_mechanism(site.n_train)
            if (planned.noise_multiplier, planned.sample_rate, planned.steps) != (
                guard.plan.noise_multiplier,
                guard.plan.sample_rate,
                guard.plan.steps_per_round,
            ):
                raise ConfigError(f"site {site.name!r}: trainer plan differs from the charged plan")
            self._trainers[site.name] = trainer
            return trainer

        return factory

    def _dp_config(self, plan: SitePrivacyPlan, training: LocalTrainingConfig) -> DpSgdConfig:
        return DpSgdConfig.from_local_config(
            training,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=None,
            sample_rate=plan.sample_rate,
            steps=plan.steps_per_round,
            reproducible_seed=self._noise_seed(),
        )

    def _noise_seed(self) -> int | None:
        if not self._privacy.reproducible_noise:
            return None
        return derived_seed(self._config.seed, "dp-noise")

    def score_release_factory(self) -> ScoreReleaseFactory:
        def factory(site: SiteData) -> MeanLoglikRelease:
            guard = self.guards.get(site.name)
            if guard is None:
                return exact_clipped_mean  # the score never leaves a non-private site
            sigma = guard.plan.omega_noise_multiplier
            if sigma is None:
                return _uniform_release
            seed = self._noise_seed()
            stream = (
                CsprngStream.os()
                if seed is None
                else CsprngStream.seeded(seed, label=f"{site.name}/omega")
            )
            source = SecureGaussian(stream)
            n_public = site.n_train

            def release(per_sample_loglik: Any, clip: float) -> float:
                return release_mean_loglik(
                    per_sample_loglik,
                    clip=clip,
                    noise_multiplier=sigma,
                    public_n=n_public,
                    random=source,
                )

            return release

        return factory

    # --- results ---------------------------------------------------------------------
    def epsilon_spent(self) -> dict[str, float]:
        """Each private site's epsilon, recomputed from its ledger."""
        return {site: guard.ledger.spent() for site, guard in self.guards.items()}

    def describe(self, epsilon_spent: Mapping[str, float]) -> dict[str, Any]:
        """``privacy.differential_privacy`` of summary.json (``epsilon_spent`` from the ledgers)."""
        p = self._privacy
        reproducible = p.reproducible_noise
        kind = NoiseSourceKind.SEEDED_CHACHA20 if reproducible else NoiseSourceKind.OS_CSPRNG
        cross = cross_check_accountant()
        sites: dict[str, Any] = {}
        for site, guard in self.guards.items():
            ledger = guard.ledger
            sites[site] = {
                **guard.plan.describe(),
                "epsilon_spent": epsilon_spent[site],
                "cross_check_epsilon": ledger.cross_check_epsilon(),
                "declined_rounds": list(guard.declined_rounds),
                "ledger": str(Path(SITES_DIR) / site),
            }
        first = next(iter(self.guards.values()), None)
        return {
            "unit": "record-level, add/remove-one adjacency",
            "accountant": create_accountant(p.accountant).describe(),
            "cross_check_accountant": cross.describe(),
            "target_epsilon": p.epsilon,
            "delta": p.delta,
            "delta_rule": "each site uses min(delta, 1/(10 n_train))",
            "clipping_bound": p.max_grad_norm,
            "expected_batch_size": p.expected_batch_size,
            "steps_per_round": p.steps_per_round,
            "early_stopping": False,
            "omega_release": first.plan.omega_release.value if first else p.omega_release.value,
            "omega_epsilon_share": p.omega_epsilon_share,
            "sites": sites,
            "non_private_sites": "fine-tune and unseen tiers release nothing (local training "
            "without DP); with --method local no site releases anything",
            "noise_source": kind.value,
            "noise_hardening": "sum of four Gaussians (Holohan and Braghin 2021)",
            "reproducible": reproducible,
            "reproducibility_note": (
                "DP noise from a ChaCha20 stream seeded by the run seed: reproducible, NOT secret"
                if reproducible
                else "DP noise from the OS CSPRNG: not reproducible, even with --seed"
            ),
            "metrics_released": False,
        }


def _uniform_release(per_sample_loglik: Any, clip: float) -> float:
    """Data-independent score: the mean log-likelihood term is the constant 0."""
    return 0.0


def _open_ledger(out_dir: Path, plan: SitePrivacyPlan, privacy: PrivacyConfig) -> PrivacyLedger:
    return open_site_ledger(
        site_state_dir(out_dir, plan.site),
        budget=plan.budget,
        accountant=create_accountant(privacy.accountant),
        cross_check=cross_check_accountant(),
    )
