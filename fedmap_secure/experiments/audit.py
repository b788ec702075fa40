"""Empirical privacy audit of a site's DP trainer: train once with canaries, bound epsilon.

The driver runs the one-run audit of Steinke, Nasr and Jagielski (NeurIPS 2023;
maths in ``fedmap_secure.privacy.audit``) against the *same* ``LocalTrainer``
the product uses (``DpSgdMapTrainer``, prior None):

1. Draw m canaries and m fair coins (the inclusion bits).
2. Train a fresh multinomial logistic-regression model on the base records
   plus the included canaries, with the trainer under audit.
3. Score every canary with the trained model, guess "in" for the highest
   scores and "out" for the lowest, and turn the number of correct guesses
   into an epsilon lower bound at the configured confidence.

A lower bound above the claimed epsilon (what the accountant says the
trainer's plan costs) proves the claim false: the classic bugs are noise
switched off and noise far below what the accountant was told.

Canaries ("Dirac" canaries, white-box design, black-box scoring): the model
gets m extra input coordinates that are zero for every base record; canary i is
``scale * e_{d+i}`` with a random label. Its gradient touches only its own
weight column (and the shared bias), so each canary's score sees exactly its
own clipped gradient plus the Gaussian noise on that column: the audit then
measures the per-record Gaussian mechanism almost without interference. DP is
a worst case over datasets *and* models, so the auditor may choose both.
(Far-away random points in the original 13-dimensional heart feature space
were tried and dropped: with a linear model, the coherent drift from the base
records' gradients swamps any single canary, and even with noise switched off
the bound stayed at 0.)

Score of canary (x, y): the change, from the initial to the trained model, of
the logit margin ``z_y(x) - max_{j != y} z_j(x)`` minus the same change at the
origin (which removes the shared bias shift). It is computed from the initial
model (data-independent) and the released model only, so it is
post-processing and the theorem applies.

**Pipeline audit** (``run_pipeline_audit``): the Dirac audit above checks the
trainer on a cleaned-up input; the pipeline audit checks what ``simulate``
actually runs at a site: the loader's scaling of the raw rows
(``RawSite.scaled``, the function ``load_heart`` uses), then one round of the
site's DP-SGD plan. The canary is one raw outlier patient, added in half of
many independent runs; the threshold audit turns the separation of a fixed
test statistic into a rigorous lower bound (independent runs). With the
declared schema the canary only adds its own clipped gradient and the bound
stays below the claim; with per-site standardisation (``Scaling.
SITE_STATISTICS``) the canary rescales every other record and the bound
exceeds it (``tests/unit/test_audit_pipeline.py``).

Reproducibility: ``AuditConfig.seed`` fixes the inclusion bits, canaries and
initial weights; the trainer's noise is reproducible only if its own config
says so (``DpSgdConfig.reproducible_seed``). With ``seed=None`` the inclusion
bits come from the OS CSPRNG.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedmap_secure.config.schema import ModelKind, SimulationConfig
from fedmap_secure.data.preprocess import RawSite, Scaling
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.fedmap.models import build_model
from fedmap_secure.privacy.accountants import DpAccountingPldAccountant, calibrate_noise_multiplier
from fedmap_secure.privacy.adjacency import Adjacency
from fedmap_secure.privacy.audit import (
    AuditMethod,
    AuditResult,
    draw_inclusion,
    one_run_audit_best,
    symmetric_candidates,
    threshold_audit,
)
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import SubsampledGaussianEvent
from fedmap_secure.training.dp_config import DpSgdConfig
from fedmap_secure.training.dp_training import DpSgdMapTrainer
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingResult

TrainerFactory = Callable[[], LocalTrainer]


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """What the audit inserts and how it guesses.

    ``guess_fractions``: candidate numbers of guesses r = fraction * m, split
    evenly between "in" and "out"; the best is kept with a Bonferroni
    correction. ``delta`` should be the claim's delta. ``threshold_quantiles``
    are used by the (heuristic for one run) threshold method.
    """

    n_canaries: int = 1000
    canary_scale: float = 10.0
    method: AuditMethod = AuditMethod.ONE_RUN
    guess_fractions: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0)
    threshold_quantiles: tuple[float, ...] = (0.5, 0.75, 0.9)
    delta: float = 1e-5
    confidence: float = 0.95
    seed: int | None = None

    def __post_init__(self) -> None:
        m = self.n_canaries
        if isinstance(m, bool) or not isinstance(m, int) or m < 2:
            raise ConfigError("AuditConfig.n_canaries must be an int >= 2")
        if not (math.isfinite(self.canary_scale) and self.canary_scale > 0):
            raise ConfigError("AuditConfig.canary_scale must be finite and > 0")
        if not 0.0 <= self.delta < 1.0 or 2.0 * self.n_canaries * self.delta >= 1.0:
            raise ConfigError("AuditConfig.delta must be in [0, 1) with 2 * n_canaries * delta < 1")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError("AuditConfig.confidence must be in (0, 1)")
        symmetric_candidates(self.n_canaries, self.guess_fractions)  # validates
        if not self.threshold_quantiles or any(not 0.0 < q < 1.0 for q in self.threshold_quantiles):
            raise ConfigError("AuditConfig.threshold_quantiles must be in (0, 1)")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError("AuditConfig.seed must be in [0, 2**63)")


@dataclass(frozen=True, kw_only=True)
class AuditReport:
    """The audit's bound beside the claim it tests."""

    result: AuditResult
    claimed_epsilon: float
    n_base: int
    n_included: int
    training: LocalTrainingResult
    scores: npt.NDArray[np.float64] = field(repr=False)
    included: npt.NDArray[np.bool_] = field(repr=False)

    @property
    def refuted(self) -> bool:
        """True when the empirical lower bound exceeds the claimed epsilon."""
        return self.result.refutes(self.claimed_epsilon)

    def describe(self) -> dict[str, Any]:
        r = self.result
        return {
            "method": r.method.value,
            "canaries": r.canaries,
            "included": self.n_included,
            "base_records": self.n_base,
            "training_steps": self.training.steps,
            "guesses": r.guesses,
            "correct": r.correct,
            "confidence": r.confidence,
            "delta": r.delta,
            "epsilon_lower_bound": r.epsilon_lower_bound,
            "claimed_epsilon": self.claimed_epsilon,
            "refuted": self.refuted,
        }


def claimed_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """What the tightest accountant (PLD) says a DP-SGD plan costs in the audit's game.

    The canary game is add/remove-one (a canary is in the training set or
    not), so the claim it is compared with is the add/remove-one epsilon of
    the same mechanism (which DP-SGD with Poisson sampling satisfies; the
    ledgers state the larger replace-one figure, ``privacy/adjacency.py``).
    The caller passes the noise the *accountant was told*; the audit then
    checks the trainer against it. Noise 0 has no finite claim: inf.
    """
    if noise_multiplier == 0.0:
        return math.inf
    event = SubsampledGaussianEvent(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps
    )
    accountant = DpAccountingPldAccountant(adjacency=Adjacency.ADD_REMOVE_ONE)
    return accountant.epsilon([event], delta)


def run_audit(
    trainer_factory: TrainerFactory,
    *,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    claimed_epsilon: float,
    config: AuditConfig,
    n_classes: int | None = None,
) -> AuditReport:
    """Train once with canaries using ``trainer_factory()`` and bound epsilon.

    ``x``/``y`` are the base records (every world contains them). The trainer
    decides steps, sampling, clipping and noise (e.g. ``DpSgdMapTrainer`` with
    its ``DpSgdConfig``); ``claimed_epsilon`` is the caller's accountant value
    for the plan at ``config.delta``.
    """
    classes = _check_base(x, y, n_classes)
    rng = _generator(config.seed)
    included = draw_inclusion(config.n_canaries, rng if config.seed is not None else None)
    canaries = make_canaries(config.n_canaries, x.shape[1], classes, config.canary_scale, rng)
    x_train, y_train = _training_set(x, y, canaries, included)
    torch_gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    model = _logistic_model(x_train.shape[1], classes, x.shape[1], torch_gen)
    initial = _frozen_copy(model)
    training = trainer_factory().train(model, x_train, y_train, None, torch_gen)
    scores = canary_scores(initial, model, canaries.x, canaries.y)
    result = _audit(scores, included, config)
    return AuditReport(
        result=result,
        claimed_epsilon=claimed_epsilon,
        n_base=len(x),
        n_included=int(included.sum()),
        training=training,
        scores=scores,
        included=included,
    )


# --- canaries ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Canaries:
    """Canary records in the model's augmented input space (d base + m canary coordinates)."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]


def make_canaries(
    n_canaries: int, n_features: int, n_classes: int, scale: float, rng: np.random.Generator
) -> Canaries:
    """Dirac canaries: canary i is ``scale`` at coordinate d + i, zero elsewhere; random label."""
    labels = rng.integers(0, n_classes, size=n_canaries).astype(np.int64)
    features = np.zeros((n_canaries, n_features + n_canaries), dtype=np.float32)
    features[np.arange(n_canaries), n_features + np.arange(n_canaries)] = scale
    return Canaries(x=features, y=labels)


def _training_set(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    canaries: Canaries,
    included: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Base records (zero in every canary coordinate) followed by the included canaries."""
    pad = np.zeros((len(x), canaries.x.shape[1] - x.shape[1]), dtype=np.float32)
    base = np.hstack([x.astype(np.float32), pad])
    x_train = np.vstack([base, canaries.x[included]]).astype(np.float32)
    y_train = np.concatenate([y.astype(np.int64), canaries.y[included]])
    return x_train, y_train


def canary_scores(
    initial: torch.nn.Module,
    trained: torch.nn.Module,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Change of the label's logit margin at each canary, net of the change at the origin."""

    def net_margin(model: torch.nn.Module) -> torch.Tensor:
        xs = torch.as_tensor(x, dtype=torch.float32)
        labels = torch.as_tensor(y, dtype=torch.int64)
        return _margin(model, xs, labels) - _margin(model, torch.zeros_like(xs), labels)

    with torch.no_grad():
        delta = net_margin(trained) - net_margin(initial)
    return delta.double().numpy()


def _margin(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    own = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
    result: torch.Tensor = own - others
    return result


# --- helpers ------------------------------------------------------------------------------


def _audit(
    scores: npt.NDArray[np.float64], included: npt.NDArray[np.bool_], config: AuditConfig
) -> AuditResult:
    if config.method is AuditMethod.ONE_RUN:
        return one_run_audit_best(
            scores,
            included,
            candidates=symmetric_candidates(len(scores), config.guess_fractions),
            delta=config.delta,
            confidence=config.confidence,
        )
    thresholds = [float(t) for t in np.quantile(scores, config.threshold_quantiles)]
    return threshold_audit(
        scores, included, thresholds=thresholds, delta=config.delta, confidence=config.confidence
    )


def _check_base(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], n_classes: int | None) -> int:
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise DataError("base x must be (n, d) and y (n,) with the same n >= 1")
    if not np.all(np.isfinite(x)):
        raise DataError("base x contains NaN or infinite values")
    if np.any(y < 0):
        raise DataError("labels must be non-negative class indices")
    classes = int(y.max()) + 1 if n_classes is None else n_classes
    if classes < 2 or int(y.max()) >= classes:
        raise DataError(f"need n_classes >= 2 covering every label, got {classes}")
    return classes


def _generator(seed: int | None) -> np.random.Generator:
    if seed is None:
        seed = int.from_bytes(os.urandom(16), "big")
    return np.random.default_rng(seed)


def _logistic_model(
    n_inputs: int, n_classes: int, n_base_features: int, generator: torch.Generator
) -> torch.nn.Linear:
    model = torch.nn.Linear(n_inputs, n_classes)
    with torch.no_grad():
        bound = 1.0 / math.sqrt(n_base_features)
        model.weight.uniform_(-bound, bound, generator=generator)
        model.weight[:, n_base_features:] = 0.0  # canary coordinates start neutral
        model.bias.zero_()
    return model


def _frozen_copy(model: torch.nn.Linear) -> torch.nn.Linear:
    copy = torch.nn.Linear(model.in_features, model.out_features)
    copy.load_state_dict(model.state_dict())
    copy.requires_grad_(False)
    return copy


# --- the pipeline audit: dataset loader + declared transform + DP-SGD, as ``simulate`` runs them


@dataclass(frozen=True, kw_only=True)
class PipelineAuditConfig:
    """A membership audit of one site's whole pipeline, over independent training runs.

    ``runs`` independent runs; in each, one outlier canary record is added to
    the site's raw training rows with probability 1/2, the rows are scaled
    exactly as the loader scales them (``scaling``), and the site's DP-SGD
    trainer runs one round of ``simulation``'s plan with the noise its
    calibration gives for ``epsilon``. ``threshold_quantiles`` of the scores are
    the candidate thresholds (Bonferroni-corrected).
    """

    epsilon: float = 1.0
    runs: int = 64
    scaling: Scaling = Scaling.DECLARED
    delta: float = 1e-5
    confidence: float = 0.95
    threshold_quantiles: tuple[float, ...] = (0.3, 0.5, 0.7)
    seed: int = 0
    simulation: SimulationConfig = field(default_factory=SimulationConfig)

    def __post_init__(self) -> None:
        if isinstance(self.runs, bool) or not isinstance(self.runs, int) or self.runs < 4:
            raise ConfigError("PipelineAuditConfig.runs must be an int >= 4")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError("PipelineAuditConfig.epsilon must be finite and > 0")
        if not 0.0 < self.delta < 1.0 or not 0.0 < self.confidence < 1.0:
            raise ConfigError("PipelineAuditConfig: delta and confidence must be in (0, 1)")
        if not self.threshold_quantiles or any(not 0.0 < q < 1.0 for q in self.threshold_quantiles):
            raise ConfigError("PipelineAuditConfig.threshold_quantiles must be in (0, 1)")
        if self.simulation.model.kind is not ModelKind.LOGISTIC:
            raise ConfigError("the pipeline audit scores a logistic model (model.kind)")


@dataclass(frozen=True, kw_only=True)
class PipelineAuditReport:
    """The pipeline audit's bound beside the accountant's claim for the audited plan."""

    result: AuditResult
    claimed_epsilon: float
    scaling: Scaling
    site: str
    n_base: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    scores: npt.NDArray[np.float64] = field(repr=False)
    included: npt.NDArray[np.bool_] = field(repr=False)

    @property
    def refuted(self) -> bool:
        return self.result.refutes(self.claimed_epsilon)

    def describe(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "scaling": self.scaling.value,
            "runs": self.result.canaries,
            "included": int(self.included.sum()),
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "epsilon_lower_bound": self.result.epsilon_lower_bound,
            "claimed_epsilon": self.claimed_epsilon,
            "refuted": self.refuted,
        }


def outlier_canary(schema: FeatureSchema) -> npt.NDArray[np.float64]:
    """One raw record far outside every declared range (binary features at their high end).

    The declared schema clips it into range like any other record; per-site
    standardisation lets it inflate every continuous column's std, which
    shrinks every other record's features towards a constant.
    """
    values = [
        f.high if (f.low, f.high) == (0.0, 1.0) else f.high + 1000.0 * (f.high - f.low)
        for f in schema.features
    ]
    return np.array([values], dtype=np.float64)


def run_pipeline_audit(
    site: RawSite, schema: FeatureSchema, config: PipelineAuditConfig
) -> PipelineAuditReport:
    """Audit ``site``'s pipeline: the loader's scaling, then the site's DP-SGD trainer.

    Score of a run (the auditor's test statistic, fixed before any audit run
    from the base data only): the released model's class-1-minus-class-0
    weight on each continuous feature, signed by that feature's correlation
    with the label in the base data and summed. Without the canary those
    weights learn the data's signal; with it, per-site standardisation
    shrinks the features to near-constants, so they do not. Each run is an
    independent trial (its own inclusion bit, Poisson sampling and noise), so
    the threshold audit's Clopper-Pearson bound is rigorous here.

    The plan (sample rate q = expected_batch_size / n and the noise) is
    computed from the base site's n, the same in both worlds, so only the
    preprocessing and the canary's own gradient differ.
    """
    privacy, training = config.simulation.privacy, config.simulation.training
    n = len(site.y_train)
    q = min(1.0, privacy.expected_batch_size / n)
    steps = privacy.steps_per_round
    sigma = calibrate_noise_multiplier(  # in the canary game's (add/remove-one) adjacency
        Budget(epsilon=config.epsilon, delta=config.delta),
        sample_rate=q,
        steps_per_round=steps,
        rounds=1,
        accountant=DpAccountingPldAccountant(adjacency=Adjacency.ADD_REMOVE_ONE),
    )
    claim = claimed_epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=config.delta)
    canary = outlier_canary(schema)
    n_classes = max(2, int(site.y_train.max()) + 1)
    signs = _feature_signs(site, schema, config.scaling, canary)
    rng = np.random.default_rng(config.seed)
    included = draw_inclusion(config.runs, rng)
    scores = np.empty(config.runs, dtype=np.float64)
    for i, inside in enumerate(included):
        x, y = _world(site, schema, config.scaling, canary if inside else None)
        dp = DpSgdConfig.from_local_config(
            training,
            noise_multiplier=sigma,
            max_grad_norm=privacy.max_grad_norm,
            expected_batch_size=None,
            sample_rate=q,
            steps=steps,
            reproducible_seed=int(rng.integers(0, 2**63)),
        )
        model = build_model(
            config.simulation.model, n_features=len(schema), n_classes=n_classes, seed=config.seed
        )
        generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        DpSgdMapTrainer(dp, stream_label=f"audit/{i}").train(model, x, y, None, generator)
        weight = next(model.parameters()).detach().double().numpy()
        scores[i] = float(np.sum(signs * (weight[1] - weight[0])))
    thresholds = [float(t) for t in np.quantile(-scores, config.threshold_quantiles)]
    result = threshold_audit(
        -scores, included, thresholds=thresholds, delta=config.delta, confidence=config.confidence
    )
    return PipelineAuditReport(
        result=result,
        claimed_epsilon=claim,
        scaling=config.scaling,
        site=site.name,
        n_base=n,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        scores=scores,
        included=included,
    )


def _world(
    site: RawSite,
    schema: FeatureSchema,
    scaling: Scaling,
    canary: npt.NDArray[np.float64] | None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The site's training rows (plus the canary, label 1) scaled as the loader scales them."""
    x_raw, y = site.x_train, site.y_train
    if canary is not None:
        x_raw = np.vstack([x_raw, canary])
        y = np.concatenate([y, np.ones(1, dtype=np.int64)])
    scaled = dataclasses.replace(site, x_train=x_raw, y_train=y).scaled(schema, scaling)
    return scaled.x_train, scaled.y_train


def _feature_signs(
    site: RawSite, schema: FeatureSchema, scaling: Scaling, canary: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """+/-1 on the features the canary is out of range in (by label correlation), else 0."""
    x, y = _world(site, schema, scaling, None)
    signs = np.zeros(len(schema))
    for j, spec in enumerate(schema.features):
        column = x[:, j].astype(np.float64)
        if canary[0, j] <= spec.high or np.ptp(column) == 0:
            continue
        signs[j] = np.sign(np.corrcoef(column, y)[0, 1])
    return signs
