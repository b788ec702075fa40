"""Configuration and result types of DP-SGD local MAP training.

The mechanism one call of ``DpSgdMapTrainer.train`` runs is the Poisson
subsampled Gaussian mechanism composed ``steps`` times; the ledger accounts it
under replace-one record adjacency (``privacy/adjacency.py``: site sizes are
public): each step keeps every record
independently with probability ``sample_rate``, clips each kept record's
gradient to L2 norm ``max_grad_norm`` (C), sums, and adds N(0, (sigma C)^2).
``PlannedMechanism`` is exactly what the site charges to its ledger as
``SubsampledGaussianEvent(noise_multiplier, sample_rate, steps)``; it is known
before training (``DpSgdMapTrainer.planned_mechanism``) because the number of
steps is fixed: no early stopping, whose validation loss would be a
data-dependent, unaccounted release.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from fedmap_secure.errors import ConfigError
from fedmap_secure.training.dp_randomness import NoiseSourceKind
from fedmap_secure.training.interface import LocalTrainingConfig, LocalTrainingResult


class GradSampleMode(enum.Enum):
    """How Opacus computes per-sample gradients (or their norms)."""

    HOOKS = "hooks"
    """Forward/backward hooks with per-layer grad samplers."""
    FUNCTORCH = "functorch"
    """``torch.func`` vmap over every layer."""
    EW = "ew"
    """torch's ExpandedWeights (``call_for_per_sample_grads``). The default: fastest
    in ``benchmarks/bench_dp_epoch.py`` on our models; supports Linear, Conv,
    Embedding, LayerNorm, GroupNorm and InstanceNorm layers only (others are
    refused with ConfigError: use HOOKS)."""
    GHOST = "ghost"
    """Ghost clipping: per-sample norms only, then a second, reweighted backward."""


class InnerOptimizer(enum.Enum):
    """The optimizer that applies the privatised (plus prior) gradient."""

    ADAM = "adam"
    SGD = "sgd"


def _finite(value: float) -> bool:
    return math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class DpSgdConfig:
    """DP-SGD hyper-parameters of one site's local training in one round.

    ``noise_multiplier`` (sigma) is calibrated by the site's privacy module
    from its own budget; the server never sets it. Give exactly one of
    ``sample_rate`` (q) or ``expected_batch_size`` (q = batch / n_train).
    Training runs ``steps`` steps, or ``epochs * ceil(1 / q)`` when ``steps``
    is None. ``reproducible_seed`` switches the CSPRNG to a seeded ChaCha20
    stream (reproducible, not secret); leave it None in deployments.
    ``secure_noise=False`` uses the torch generator passed to ``train`` (fast,
    NOT secure; experiments only). ``fix_incompatible_modules`` lets
    ``prepare_model`` replace layers Opacus refuses (BatchNorm -> GroupNorm);
    otherwise such models are refused with ``ConfigError``.
    """

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float | None = None
    expected_batch_size: int | None = None
    epochs: int = 1
    steps: int | None = None
    optimizer: InnerOptimizer = InnerOptimizer.ADAM
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    grad_sample_mode: GradSampleMode = GradSampleMode.EW
    secure_noise: bool = True
    reproducible_seed: int | None = None
    fix_incompatible_modules: bool = False
    class_weights: tuple[float, ...] = ()
    """Declared (public) per-class loss weights; empty: unweighted. Never computed from
    the site's records (see ``ClassWeighting``)."""

    def __post_init__(self) -> None:
        if any(not (_finite(w) and w > 0.0) for w in self.class_weights):
            raise ConfigError("class_weights must be finite and > 0")
        if not (_finite(self.noise_multiplier) and self.noise_multiplier >= 0.0):
            raise ConfigError("noise_multiplier must be finite and >= 0")
        if not (_finite(self.max_grad_norm) and self.max_grad_norm > 0.0):
            raise ConfigError("max_grad_norm (the clipping bound C) must be finite and > 0")
        if (self.sample_rate is None) == (self.expected_batch_size is None):
            raise ConfigError("give exactly one of sample_rate and expected_batch_size")
        if self.sample_rate is not None and not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError("sample_rate must be in (0, 1]")
        if self.expected_batch_size is not None and self.expected_batch_size < 1:
            raise ConfigError("expected_batch_size must be >= 1")
        if self.epochs < 1 or (self.steps is not None and self.steps < 1):
            raise ConfigError("epochs and steps must be >= 1")
        if not (_finite(self.learning_rate) and self.learning_rate > 0.0):
            raise ConfigError("learning_rate must be finite and > 0")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ConfigError("weight_decay must be finite and >= 0")
        if self.reproducible_seed is not None and not 0 <= self.reproducible_seed < 2**64:
            raise ConfigError("reproducible_seed must be in [0, 2**64)")

    @classmethod
    def from_local_config(
        cls,
        local: LocalTrainingConfig,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        **overrides: Any,
    ) -> DpSgdConfig:
        """The DP counterpart of a non-private config: same epochs, batch size, Adam wd;
        learning rate ``dp_learning_rate`` (else ``learning_rate``); declared class weights.

        ``local``'s early-stopping fields (patience, validation_fraction), its
        whole-gradient clip and its "balanced" class weighting (computed from the
        site's counts: not DP) have no DP counterpart and are ignored.
        """
        fields: dict[str, Any] = {
            "expected_batch_size": local.batch_size,
            "epochs": local.epochs,
            "learning_rate": (
                local.dp_learning_rate
                if local.dp_learning_rate is not None
                else local.learning_rate
            ),
            "weight_decay": local.weight_decay,
            "class_weights": local.dp_class_weights(),
        }
        fields.update(overrides)
        return cls(noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, **fields)

    def sample_rate_for(self, n_train: int) -> float:
        """The Poisson sampling rate q for a site with ``n_train`` records."""
        if n_train < 1:
            raise ConfigError("a site needs at least one training record")
        if self.sample_rate is not None:
            return self.sample_rate
        assert self.expected_batch_size is not None
        return min(1.0, self.expected_batch_size / n_train)

    def steps_for(self, n_train: int) -> int:
        """The exact number of DP-SGD steps ``train`` will take."""
        if self.steps is not None:
            return self.steps
        return self.epochs * steps_per_epoch(self.sample_rate_for(n_train))


def steps_per_epoch(sample_rate: float) -> int:
    """ceil(1 / q), robust to 1/q landing a hair above an integer."""
    return max(1, math.ceil(1.0 / sample_rate - 1e-9))


@dataclass(frozen=True, kw_only=True)
class PlannedMechanism:
    """The Poisson subsampled Gaussian mechanism a ``train`` call runs (or ran)."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float


@dataclass(frozen=True, kw_only=True)
class DpTrainingResult(LocalTrainingResult):
    """``LocalTrainingResult`` plus the exact mechanism that ran, for the ledger.

    ``final_train_loss`` is the mean loss over the last epoch's sampled
    batches: it is NOT differentially private and must stay at the site.
    """

    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    expected_batch_size: float
    empty_batches: int
    grad_sample_mode: GradSampleMode
    noise_source: NoiseSourceKind
    reproducible: bool

    @property
    def mechanism(self) -> PlannedMechanism:
        return PlannedMechanism(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            max_grad_norm=self.max_grad_norm,
        )
