"""One site: its data, its personalised model theta_k and what it computes locally.

A ``Site`` holds everything that never leaves the site: data, the trained
model, its random generator and its per-round ``SiteReport`` (training loss,
score, test metrics). What leaves the site is only the clipped contribution
vector handed to the aggregator.
"""

from __future__ import annotations

import copy
import enum
import hashlib
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.config.schema import ScoreConfig
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import LocalProtocolError
from fedmap_secure.fedmap.contribution import (
    MeanLoglikRelease,
    contribution_score,
    exact_clipped_mean,
)
from fedmap_secure.fedmap.dp_personalisation import (
    Personalised,
    james_stein_factor,
    shrunk_average,
    tail_average,
)
from fedmap_secure.fedmap.evaluation import EvalMetrics, evaluate, predict_proba
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import GlobalState, MethodStrategy, encode_contribution
from fedmap_secure.fedmap.models import flat_vector, frozen_copies, load_flat_vector
from fedmap_secure.fedmap.threshold import ThresholdChoice, choose_threshold
from fedmap_secure.training.interface import DpPersonalised, LocalTrainer, LocalTrainingResult


class Phase(enum.Enum):
    """When a site trained: a federated round, or fine-tuning after training."""

    TRAIN = "train"
    FINETUNE = "finetune"
    PERSONALISE = "personalise"
    """The final MAP solve of a training-tier site (``[personalisation]``)."""


@dataclass(frozen=True, kw_only=True)
class SiteReport:
    """A site's own record of one round. Produced and kept locally; never aggregated.

    In a simulation the operator of every site is the same process, so the
    engine may read these reports directly; in a deployment each hospital
    keeps its own.
    """

    site: str
    tier: Tier
    round_index: int
    phase: Phase
    training: LocalTrainingResult | None
    omega: float | None
    prior_value: float | None
    clipped_coordinates: int
    personalised: EvalMetrics | None
    global_: EvalMetrics | None
    declined: bool = False
    """The site declined this round (its privacy budget): it trained and sent nothing."""


class Site:
    """A site's local state and computations (implements ``TrainedSite``)."""

    def __init__(
        self,
        *,
        data: SiteData,
        model: nn.Module,
        gamma_model: nn.Module,
        prior: ConvexPrior | None,
        trainer: LocalTrainer | None,
        generator: torch.Generator,
        score_config: ScoreConfig,
        n_classes: int,
        score_release: MeanLoglikRelease = exact_clipped_mean,
        threshold_rows: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None,
        threshold_fallback: ThresholdChoice | None = None,
        personalised: DpPersonalised = DpPersonalised.LAST,
        average_rounds: int = 2,
        reliability: bool = False,
    ) -> None:
        if personalised is not DpPersonalised.LAST and average_rounds < 2:
            raise LocalProtocolError(f"site {data.name!r}: average_rounds must be >= 2")
        self.data = data
        self.model = model
        self._gamma_model = gamma_model
        self._prior = prior
        if prior is not None:
            prior.requires_grad_(False)
        self._trainer = trainer
        self._generator = generator
        self._score_config = score_config
        self._score_release = score_release
        self._n_classes = n_classes
        self._gamma: list[torch.Tensor] | None = None
        self.trained = False
        self._score: tuple[float, float] | None = None
        self.reports: list[SiteReport] = []
        self._threshold_rows = threshold_rows
        self.threshold: ThresholdChoice | None = threshold_fallback
        """The personalised model's decision rule (None: argmax, no threshold configured)."""
        self._personalised_rule = personalised
        self._iterates: deque[tuple[FloatVector, FloatVector]] = deque(maxlen=average_rounds)
        self._averaged: nn.Module | None = None
        self._made: Personalised | None = None
        self._reliability = reliability
        self._displacements: deque[FloatVector] = deque(maxlen=max(average_rounds, 2))
        self.reliability_factor: float | None = None
        """The last James-Stein factor omega was multiplied by (``reliability`` only)."""

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def n_train(self) -> int:
        return self.data.n_train

    @property
    def prior(self) -> ConvexPrior | None:
        """The site's copy of the ICNN prior (None for methods without one)."""
        return self._prior

    def receive(self, state: GlobalState) -> None:
        """Load the broadcast gamma (and psi) for this round."""
        load_flat_vector(self._gamma_model.parameters(), state.gamma)
        self._gamma = frozen_copies(self._gamma_model.parameters())
        if self._prior is not None and state.psi is not None:
            self._prior.load_psi(state.psi)

    def train(self, strategy: MethodStrategy, *, start_from_gamma: bool) -> LocalTrainingResult:
        """Local MAP training of theta_k under the strategy's prior, from gamma or from theta_k."""
        if self._gamma is None:
            raise LocalProtocolError(f"site {self.name!r}: train() before receive()")
        if self._trainer is None:
            raise LocalProtocolError(f"site {self.name!r} has no training data and no trainer")
        if start_from_gamma:
            self.model.load_state_dict(self._gamma_model.state_dict())
        prior_fn = strategy.site_prior(self.model, self._gamma, self._prior)
        result = self._trainer.train(
            self.model, self.data.x_train, self.data.y_train, prior_fn, self._generator
        )
        self.trained = True
        self._score = None
        if self._personalised_rule is not DpPersonalised.LAST:
            self._iterates.append((self.theta_vector(), self.gamma_vector()))
            self._averaged, self._made = None, None
        if self._reliability:
            self._displacements.append(self.theta_vector() - self.gamma_vector())
        return result

    def personalise(
        self,
        strategy: MethodStrategy,
        trainer: LocalTrainer,
        *,
        prior_precision: float | None,
        start: FloatVector | None = None,
        rows: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None,
        generator: torch.Generator | None = None,
    ) -> LocalTrainingResult:
        """The final MAP solve of theta_k from gamma under the prior scaled by 1/n_k.

        Minimises mean loss + (R_psi(theta; gamma) + lambda/2 ||theta - gamma||^2) / n_k
        (``PersonalisationConfig``): the MAP posterior of the site's n_k rows under the
        strategy's prior, written per row as the trainer minimises a mean loss.
        ``prior_precision`` None: no prior at all (the mean loss alone). ``start``: the
        flat vector to start from (default gamma). ``rows``: the (x, y) rows to solve on
        (default the site's training rows; n_k is then their number) and ``generator``
        the stream to draw batches from (default the site's): a site choosing among
        candidate solves fits them on part of its rows (``fedmap.solve_choice``).
        """
        if self._gamma is None:
            raise LocalProtocolError(f"site {self.name!r}: personalise() before receive()")
        if prior_precision is not None and prior_precision < 0:
            raise LocalProtocolError(f"site {self.name!r}: negative prior precision")
        x, y = (self.data.x_train, self.data.y_train) if rows is None else rows
        n = int(x.shape[0])
        if n < 1:
            raise LocalProtocolError(f"site {self.name!r} has no training rows to personalise on")
        self.model.load_state_dict(self._gamma_model.state_dict())
        if start is not None:
            load_flat_vector(self.model.parameters(), start)
        prior_fn = strategy.site_prior(self.model, self._gamma, self._prior)
        params, gamma = list(self.model.parameters()), self._gamma

        def map_prior() -> torch.Tensor:
            quad = torch.stack([(p - g).pow(2).sum() for p, g in zip(params, gamma, strict=True)])
            total = 0.5 * (prior_precision or 0.0) * quad.sum()
            if prior_fn is not None:
                total = total + prior_fn()
            return total / n

        result = trainer.train(
            self.model,
            x,
            y,
            None if prior_precision is None else map_prior,
            self._generator if generator is None else generator,
        )
        self.trained = True
        self._score = None
        return result

    @property
    def dp_personalisation(self) -> Personalised | None:
        """How the personalised model was formed (None: ``model`` itself, the last one)."""
        self._form_personalised()
        return self._made

    @property
    def personalised_model(self) -> nn.Module:
        """The model the site keeps, evaluates and writes as its personalised model.

        ``DpPersonalised.LAST``: ``model`` itself. AVERAGE / SHRUNK: formed from the site's
        models (and the gammas they started from) of its last ``average_rounds`` ``train``
        calls, fewer while fewer have run (``fedmap_secure.fedmap.dp_personalisation``). It is
        post-processing of the site's own DP-trained models (no privacy cost) and stays at
        the site; what the site contributes and scores is unchanged (``model``).
        """
        self._form_personalised()
        return self.model if self._averaged is None else self._averaged

    def _form_personalised(self) -> None:
        if self._personalised_rule is DpPersonalised.LAST or not self._iterates:
            return
        if self._averaged is None:
            thetas = [theta for theta, _ in self._iterates]
            gammas = [gamma for _, gamma in self._iterates]
            rule = (
                tail_average
                if self._personalised_rule is DpPersonalised.AVERAGE
                else shrunk_average
            )
            self._made = rule(thetas, gammas)
            averaged = copy.deepcopy(self.model)
            load_flat_vector(averaged.parameters(), self._made.theta)
            self._averaged = averaged

    # --- TrainedSite -----------------------------------------------------------
    def theta_vector(self) -> FloatVector:
        return flat_vector(self.model.parameters())

    def gamma_vector(self) -> FloatVector:
        if self._gamma is None:
            raise LocalProtocolError(f"site {self.name!r}: no gamma received")
        return flat_vector(self._gamma_model.parameters())

    def prior_value(self) -> float:
        prior, gamma = self._require_prior()
        with torch.no_grad():
            return float(prior(list(self.model.parameters()), gamma))

    def score(self) -> tuple[float, float]:
        if self._score is None:
            self._score = self._compute_score()
        return self._score

    @property
    def last_score(self) -> tuple[float, float] | None:
        """The score of the current theta_k if it was computed (for the site's report)."""
        return self._score

    def _compute_score(self) -> tuple[float, float]:
        prior_value = self.prior_value()
        self.model.eval()
        with torch.no_grad():
            logits = self.model(torch.from_numpy(self.data.x_train))
            nll = nn.functional.cross_entropy(
                logits, torch.from_numpy(self.data.y_train), reduction="none"
            )
        omega = contribution_score(
            per_sample_loglik=-nll.to(torch.float64).numpy(),
            prior_value=prior_value,
            config=self._score_config,
            release=self._score_release,
        )
        if self._reliability and self._displacements:
            # the share of the site's update that is not DP noise (post-processing)
            self.reliability_factor = james_stein_factor(np.stack(self._displacements))
            omega = max(self._score_config.omega_min, omega * self.reliability_factor)
        return omega, prior_value

    def psi_gradient(self) -> FloatVector:
        prior, gamma = self._require_prior()
        return prior.psi_gradient(list(self.model.parameters()), gamma)

    def _require_prior(self) -> tuple[ConvexPrior, list[torch.Tensor]]:
        if self._prior is None or self._gamma is None:
            raise LocalProtocolError(f"site {self.name!r}: no ICNN prior or gamma received")
        return self._prior, self._gamma

    # --- contribution and evaluation ------------------------------------------
    def contribute(self, strategy: MethodStrategy, layout: VectorLayout) -> tuple[FloatVector, int]:
        """The clipped flat vector for the aggregator and how many coordinates were clipped."""
        return encode_contribution(layout, strategy.contribution(self))

    def choose_threshold(self) -> ThresholdChoice | None:
        """Re-choose the personalised model's threshold on the held-out rows (if any)."""
        rows = self._threshold_rows
        if rows is not None and self.trained:
            self.threshold = choose_threshold(
                predict_proba(self.personalised_model, rows[0]), rows[1]
            )
        return self.threshold

    def evaluate_personalised(self) -> EvalMetrics | None:
        if not self.trained:
            return None
        choice = self.choose_threshold()
        return evaluate(
            self.personalised_model,
            self.data.x_test,
            self.data.y_test,
            n_classes=self._n_classes,
            threshold=None if choice is None else choice.value,
        )

    def evaluate_global(self) -> EvalMetrics | None:
        if self._gamma is None:
            return None
        return evaluate(
            self._gamma_model, self.data.x_test, self.data.y_test, n_classes=self._n_classes
        )

    def record(self, report: SiteReport) -> None:
        self.reports.append(report)


def site_seed(run_seed: int, site_name: str) -> int:
    """A per-site seed derived from the run seed (stable across runs and platforms)."""
    digest = hashlib.sha256(f"fedmap-secure/site/{run_seed}/{site_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def make_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g
