"""Typed, validated configuration of a simulation (frozen dataclasses, no I/O).

Every value has a default documented in ``fedmap_secure/config/default.toml``;
``load_config`` reads a TOML file into these classes and rejects unknown keys
and wrong types with a ``ConfigError`` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field

from fedmap_secure.config.privacy import ClientDpSettings, PrivacyConfig, SecAggSettings
from fedmap_secure.config.solve import (
    SolveCandidate,
    SolveSelect,
    map_token,
    parse_solve_candidate,
)
from fedmap_secure.errors import ConfigError
from fedmap_secure.training.interface import ClassWeighting, LocalTrainingConfig


class Method(enum.Enum):
    """A federated method the engine can run (see ``fedmap_secure.fedmap.methods``)."""

    LOCAL = "local"
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDMAP = "fedmap"


class ModelKind(enum.Enum):
    """The per-site model: logistic regression (FLamby's heart baseline), an MLP, or a
    user-supplied ``torch.nn.Module`` (``custom``: ``ModelConfig.factory`` names it)."""

    LOGISTIC = "logistic"
    MLP = "mlp"
    CUSTOM = "custom"


class PriorForm(enum.Enum):
    """Shape of the ICNN prior.

    PER_TENSOR: the reference form, one ICNN per parameter tensor on the whole
    flattened (theta_i, gamma_i) pair.
    COORDINATEWISE: one small ICNN applied to every (theta_j, gamma_j) pair and
    summed; far fewer parameters.
    """

    PER_TENSOR = "per-tensor"
    COORDINATEWISE = "coordinatewise"


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be finite and > 0, got {value!r}")


def _hidden(name: str, sizes: tuple[int, ...]) -> None:
    if not sizes or any(h < 1 for h in sizes):
        raise ConfigError(f"{name} must be a non-empty list of sizes >= 1, got {list(sizes)}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The model every site trains.

    ``kind = custom`` builds ``factory`` (a ``module:function`` name, or a name the Python
    API registered for an in-process callable): a site builds a custom model only when its
    own operator allowed that factory in its process (``fedmap_secure.fedmap.models``), never
    because a run configuration names it. ``fix`` replaces the layers Opacus cannot make
    private (BatchNorm -> GroupNorm) with ``opacus.validators.ModuleValidator.fix``.
    """

    kind: ModelKind = ModelKind.LOGISTIC
    hidden: tuple[int, ...] = (32,)
    factory: str = ""
    fix: bool = False
    candidates: tuple[str, ...] = ()
    """Models to choose among on validation rows, per run (``"logistic"``, ``"mlp:16"``,
    ``"mlp:32,16"``); empty: no selection, ``kind``/``hidden`` are used
    (``fedmap_secure.experiments.model_selection``; non-private runs only)."""

    def __post_init__(self) -> None:
        _hidden("model.hidden", self.hidden)
        for spec in self.candidates:
            parse_candidate(spec)
        if len(set(self.candidates)) != len(self.candidates):
            raise ConfigError(f"model.candidates has duplicates: {list(self.candidates)}")
        if self.candidates and self.kind is ModelKind.CUSTOM:
            raise ConfigError('model.candidates choose among built-in models, not kind = "custom"')
        if (self.kind is ModelKind.CUSTOM) != bool(self.factory):
            raise ConfigError(
                'model.factory names the module of kind = "custom" (and only of that kind)'
            )
        if self.fix and self.kind is not ModelKind.CUSTOM:
            raise ConfigError('model.fix applies to kind = "custom" only')


def parse_candidate(spec: str) -> tuple[ModelKind, tuple[int, ...]]:
    """``"logistic"`` or ``"mlp:H1[,H2...]"`` -> (kind, hidden); ConfigError otherwise."""
    kind, _, sizes = spec.partition(":")
    if kind == ModelKind.LOGISTIC.value and not sizes:
        return ModelKind.LOGISTIC, (32,)
    if kind == ModelKind.MLP.value and sizes:
        try:
            hidden = tuple(int(h) for h in sizes.split(","))
        except ValueError:
            hidden = ()
        if hidden and all(h >= 1 for h in hidden):
            return ModelKind.MLP, hidden
    raise ConfigError(
        f'model.candidates entry {spec!r} must be "logistic" or "mlp:H1[,H2...]" (e.g. "mlp:16")'
    )


@dataclass(frozen=True, kw_only=True)
class PriorConfig:
    """ICNN prior hyper-parameters (reference: hidden (64, 32), alpha 0.01, epsilon 1e-4)."""

    form: PriorForm = PriorForm.PER_TENSOR
    hidden: tuple[int, ...] = (64, 32)
    coordinatewise_hidden: tuple[int, ...] = (8, 8)
    coordinatewise_shared: bool = False
    alpha: float = 0.01
    epsilon: float = 1e-4

    def __post_init__(self) -> None:
        _hidden("prior.hidden", self.hidden)
        _hidden("prior.coordinatewise_hidden", self.coordinatewise_hidden)
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ConfigError(f"prior.alpha must be >= 0, got {self.alpha!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ConfigError(f"prior.epsilon must be >= 0, got {self.epsilon!r}")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Server step size on the ICNN parameters psi (one step per round, from sums)."""

    lr_psi: float = 1e-2

    def __post_init__(self) -> None:
        _positive("server.lr_psi", self.lr_psi)


@dataclass(frozen=True, kw_only=True)
class ScoreConfig:
    """Contribution score omega = exp(clamp(mean clipped log-lik - prior/N, log lo, log hi)).

    ``loglik_clip`` = B clips each sample's log-likelihood into [-B, 0], so one
    sample moves the mean by at most B / N.
    """

    omega_min: float = 1e-3
    omega_max: float = 1.0
    loglik_clip: float = 10.0
    dp_loglik_clip: float = 2.0
    """B of the DP (Gaussian) release of the mean log-likelihood: its noise std is
    sigma * B / N, so a smaller B is less noise at the same epsilon (records with a
    log-likelihood below -B count as -B)."""
    dp_shrinkage: bool = True
    """Shrink each noisy DP mean toward ``dp_prior_mean`` by its public noise level
    (``training.dp_score.shrink_noisy_mean``; post-processing, free)."""
    dp_prior_mean: float = -0.7
    dp_prior_sd: float = 0.35
    dp_reliability: bool = False
    """DP-SGD sites: multiply omega by the James-Stein factor of the site's last
    ``[training] dp_average_rounds`` displacements theta_r - gamma_r (the share of its
    update that is not DP noise; ``fedmap.dp_personalisation.james_stein_factor``), clamped
    at ``omega_min``. Post-processing of the site's DP-trained models: no charge."""

    def __post_init__(self) -> None:
        _positive("score.omega_min", self.omega_min)
        _positive("score.loglik_clip", self.loglik_clip)
        _positive("score.dp_loglik_clip", self.dp_loglik_clip)
        _positive("score.dp_prior_sd", self.dp_prior_sd)
        if not (math.isfinite(self.dp_prior_mean) and self.dp_prior_mean <= 0):
            raise ConfigError("score.dp_prior_mean must be a finite log-likelihood <= 0")
        if not (math.isfinite(self.omega_max) and self.omega_max > self.omega_min):
            raise ConfigError("score.omega_max must be finite and > score.omega_min")


@dataclass(frozen=True, kw_only=True)
class BoundsConfig:
    """Declared per-coordinate magnitude bounds of what a site contributes.

    Sites clip to these before contributing (and count clipped coordinates);
    secure aggregation quantises within them. ``theta`` bounds each model
    parameter, ``grad_psi`` each coordinate of the ICNN gradient, ``prior`` the
    prior value R_k, ``sample_count`` a site's number of training rows.
    """

    theta: float = 20.0
    grad_psi: float = 10.0
    prior: float = 1.0e4
    sample_count: float = 1.0e6

    def __post_init__(self) -> None:
        for name in ("theta", "grad_psi", "prior", "sample_count"):
            _positive(f"bounds.{name}", getattr(self, name))


@dataclass(frozen=True, kw_only=True)
class FedProxConfig:
    mu: float = 0.1

    def __post_init__(self) -> None:
        _positive("fedprox.mu", self.mu)


@dataclass(frozen=True, kw_only=True)
class PersonalisationConfig:
    """FedMAP's final personalisation solve (non-private sites; docs/TUNING.md).

    After the last round each training-tier FedMAP site that trains without
    record-level DP re-solves its MAP objective from the final gamma, for up to
    ``epochs`` epochs of the ``[training]`` Adam trainer (its learning rate, batch
    size, class weighting and validation early stopping):

        theta_k = argmin_theta (1/n_k) [ sum_n l(x_n, y_n; theta)
                                         + R_psi(theta; gamma) + (lambda/2) ||theta - gamma||^2 ],

    i.e. the mean loss plus the prior divided by the site's own n_k, as a MAP
    posterior weighs a fixed prior against n_k records (the round training adds
    the prior to the mean loss undivided). ``prior_precision`` = lambda is the
    precision of the Gaussian part of the prior (theta_k ~ N(gamma, I / lambda)):
    a site with few rows stays near gamma, a large one follows its own data.
    n_k is used at the site only; nothing new is released (the personalised model
    stays at the site). ``epochs = 0``: off (the personalised model is the last
    round's theta_k). Defaults (20 epochs, lambda = 100, Adam lr 1e-2, no early
    stopping) chosen on validation rows of heart and thyroid (docs/TUNING.md,
    ``benchmarks/tune_personalisation.py``; session 5 had lambda = 10, ``[training]``'s
    lr 3e-3 and early stopping: ``benchmarks/configs/personalisation_session5.toml``).

    The solve's own optimisation knobs (None inherits ``[training]``'s value):
    ``learning_rate`` (Adam step size; None, from the Python API only since TOML has no
    null: ``[training] learning_rate``; a TOML file writes the value, e.g. 3e-3),
    ``early_stopping`` (true: stop on the trainer's held-out ``validation_fraction`` of
    the site's training rows and keep the best epoch's model; false: no held-out part,
    every training row, all ``epochs`` epochs) and ``patience`` (epochs without a better
    held-out loss before it stops; None: ``[training] patience``; only with early stopping).

    ``select = "validation"`` (``"client_dp"``, the default: only in runs with
    client-level DP): each site chooses the solve it keeps among
    ``map:<prior_precision>`` and ``candidates`` (``fedmap_secure.config.solve``) by
    balanced accuracy on its own stratified held-out rows (``select_fraction`` of its
    training rows), ties to the configured solve, then refits the choice on all its
    training rows (``fedmap_secure.fedmap.solve_choice``; nothing leaves the site).
    """

    epochs: int = 20
    prior_precision: float = 100.0
    learning_rate: float | None = 1e-2
    early_stopping: bool = False
    patience: int | None = None
    select: SolveSelect = SolveSelect.CLIENT_DP
    """``"validation"``: each site chooses its solve among ``candidates`` (and the
    configured one) by balanced accuracy on its own stratified held-out rows, then refits
    the choice on all its training rows (``fedmap_secure.fedmap.solve_choice``);
    ``"client_dp"`` (default, chosen on validation rows: docs/TUNING.md): the same in runs
    with client-level DP only; ``"none"``: always the configured solve."""
    candidates: tuple[str, ...] = ("map:1000", "map:100", "map:10", "map:0", "local")
    """The other solves a site may choose (``fedmap_secure.config.solve``); the configured
    ``map:<prior_precision>`` is always a candidate and wins ties."""
    select_fraction: float = 0.2
    """The share of a site's training rows held out to choose on (``select``)."""

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"personalisation.epochs must be >= 0, got {self.epochs}")
        if not (math.isfinite(self.prior_precision) and self.prior_precision >= 0):
            raise ConfigError(
                "personalisation.prior_precision must be a finite number >= 0, "
                f"got {self.prior_precision!r}"
            )
        lr = self.learning_rate
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ConfigError(
                f"personalisation.learning_rate must be a finite number > 0, got {lr!r}"
            )
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"personalisation.patience must be >= 0, got {self.patience}")
        if self.patience is not None and not self.early_stopping:
            raise ConfigError("personalisation.patience needs early_stopping = true")
        tokens = [parse_solve_candidate(t).token for t in self.candidates]
        if len(set(tokens)) != len(tokens):
            raise ConfigError(f"personalisation.candidates has duplicates: {list(tokens)}")
        if not 0.0 < self.select_fraction < 1.0:
            raise ConfigError(
                f"personalisation.select_fraction must be in (0, 1), got {self.select_fraction!r}"
            )
        if self.select is SolveSelect.VALIDATION and self.epochs == 0:
            # ("client_dp", the default, chooses only where a solve runs: epochs = 0 is off)
            raise ConfigError(
                'personalisation.select = "validation" needs the solve on (epochs > 0)'
            )

    def trainer_config(self, training: LocalTrainingConfig) -> LocalTrainingConfig:
        """The ``[training]`` trainer with the solve's epochs and its own knobs applied."""
        return dataclasses.replace(
            training,
            epochs=self.epochs,
            learning_rate=training.learning_rate
            if self.learning_rate is None
            else self.learning_rate,
            patience=training.patience if self.patience is None else self.patience,
            validation_fraction=training.validation_fraction if self.early_stopping else 0.0,
        )

    def solve_candidates(self) -> tuple[SolveCandidate, ...]:
        """The configured solve first, then the other candidates in their configured order."""
        default = parse_solve_candidate(map_token(self.prior_precision))
        others = (parse_solve_candidate(t) for t in self.candidates)
        return (default, *(c for c in others if c.token != default.token))


_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig:
    """The consortium's feature contract: ordered feature names and the schema digest.

    Empty (the default), the run takes both from the dataset's declared
    schema when it starts, so the announced configuration always carries
    them. Set, a dataset (or a joining site) whose schema has other names, another
    order, other constants or other classes is refused
    (``fedmap_secure.data.contract``).
    """

    names: tuple[str, ...] = ()
    schema_digest: str = ""

    def __post_init__(self) -> None:
        if any(not n or n != n.strip() for n in self.names):
            raise ConfigError("features.names must be non-empty names without surrounding spaces")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"features.names has duplicates: {list(self.names)}")
        digest = self.schema_digest
        if digest and (len(digest) != 64 or not set(digest) <= _HEX):
            raise ConfigError("features.schema_digest must be empty or 64 lowercase hex digits")


DEFAULT_TRAINING = LocalTrainingConfig(
    epochs=2,
    learning_rate=3e-3,
    class_weighting=ClassWeighting.BALANCED,
    dp_learning_rate=5e-2,
)
"""FedMAP's values chosen by the tuning protocol of docs/TUNING.md (validation rows of
Fed-Heart-Disease only, never test rows). The DP-SGD trainer keeps lr 5e-2 (not re-tuned:
tuning on private data costs privacy, see docs/TUNING.md); "balanced" weighting applies
to the non-private trainer only (``ClassWeighting``)."""


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """Everything that determines a simulation run, apart from data and aggregator."""

    method: Method = Method.FEDMAP
    rounds: int = 20
    seed: int = 0
    finetune_rounds: int = 5
    evaluate_every: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    training: LocalTrainingConfig = field(default_factory=lambda: DEFAULT_TRAINING)
    prior: PriorConfig = field(default_factory=PriorConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    bounds: BoundsConfig = field(default_factory=BoundsConfig)
    fedprox: FedProxConfig = field(default_factory=FedProxConfig)
    personalisation: PersonalisationConfig = field(default_factory=PersonalisationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    client_dp: ClientDpSettings = field(default_factory=ClientDpSettings)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"simulation.rounds must be >= 1, got {self.rounds}")
        if self.finetune_rounds < 1:
            raise ConfigError(
                f"simulation.finetune_rounds must be >= 1, got {self.finetune_rounds}"
            )
        if self.evaluate_every < 0:
            raise ConfigError(f"simulation.evaluate_every must be >= 0, got {self.evaluate_every}")
        if self.seed < 0:
            raise ConfigError(f"simulation.seed must be >= 0, got {self.seed}")


def check_model_selection(config: SimulationConfig) -> None:
    """Refuse ``[model] candidates`` under DP (``experiments.model_selection`` says why)."""
    if not config.model.candidates:
        return
    if config.privacy.enabled or config.client_dp.enabled:
        raise ConfigError(
            "model.candidates selects a model on the sites' validation rows; under DP each "
            "candidate run is a release and the selection composes (Papernot and Steinke, "
            "ICLR 2022), which is not accounted here: choose the model on public or synthetic "
            "data (benchmarks/tune.py) and set [model] kind/hidden, or run with --no-dp"
        )
