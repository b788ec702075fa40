"""What a run produces: each site's final metrics and the run's result (data only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.fedmap.dp_personalisation import PersonalisationRecord
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.fedmap.methods import GlobalState, ServerLog
from fedmap_secure.fedmap.site import SiteReport
from fedmap_secure.fedmap.solve_choice import SolveChoice
from fedmap_secure.fedmap.threshold import ThresholdChoice
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig

TrainerFactory = Callable[[SiteData, LocalTrainingConfig], LocalTrainer]
"""Makes the non-private local trainer of one site (DP trainers come from the site's policy)."""

ProgressFn = Callable[[str, int, int], None]
"""Called as progress(phase, completed, total) after every round."""


@dataclass(frozen=True, kw_only=True)
class SiteResult:
    """Final test metrics of one site (None where the model does not exist)."""

    site: str
    tier: Tier
    n_train: int
    n_test: int
    personalised: EvalMetrics | None
    global_: EvalMetrics | None
    threshold: ThresholdChoice | None = None
    """The personalised model's decision threshold (``[training] threshold = "validation"``);
    None: argmax, no threshold configured."""
    dp_personalisation: PersonalisationRecord | None = None
    """How a DP-SGD site formed its personalised model (``[training] dp_personalised``);
    None: the last trained model."""
    personalisation: SolveChoice | None = None
    """Which ``[personalisation]`` solve the site kept and why; None: no solve ran."""


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    method: str
    dataset: str
    rounds: int
    seed: int
    sites: tuple[SiteResult, ...]
    reports: tuple[SiteReport, ...]
    server_logs: tuple[ServerLog, ...]
    final_state: GlobalState | None
    n_theta: int
    n_psi: int
    wall_seconds: float
    model_files: dict[str, Path] = field(default_factory=dict)
    """The model sidecars the run wrote: site name -> personalised, ``"global"`` -> global."""

    def _accuracies(self, attr: str) -> list[float]:
        values = [getattr(s, attr) for s in self.sites]
        return [m.accuracy for m in values if m is not None]

    @property
    def mean_personalised_accuracy(self) -> float | None:
        acc = self._accuracies("personalised")
        return float(np.mean(acc)) if acc else None

    @property
    def worst_site_personalised_accuracy(self) -> float | None:
        acc = self._accuracies("personalised")
        return min(acc) if acc else None

    @property
    def mean_global_accuracy(self) -> float | None:
        acc = self._accuracies("global_")
        return float(np.mean(acc)) if acc else None
