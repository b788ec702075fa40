"""The contract between a site's round logic and whatever trains its model.

A ``LocalTrainer`` fits a torch model on one site's training data by
minimising ``mean data loss + prior(theta)``. The prior is a closure over the
fixed (gamma, psi) of the round; it depends on the parameters only, never on
data, so a DP trainer may add its gradient after clipping and noising at no
privacy cost. The non-private trainer and the DP-SGD trainer both implement
this protocol, so the FedMAP round code does not change when DP is switched on.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fedmap_secure.errors import ConfigError

if TYPE_CHECKING:  # torch is not imported here: the config (and so the CLI) loads without it
    import numpy as np
    import numpy.typing as npt
    import torch

PriorFn = Callable[[], "torch.Tensor"]
"""Returns the scalar prior R(theta; gamma, psi) for the model's *current* parameters."""


@runtime_checkable
class StackablePrior(Protocol):
    """A ``PriorFn`` that can also be evaluated for many sites' parameters at once.

    ``stacked(flat)``: ``flat`` is (K, P), one row per site, each the model's parameters
    flattened in ``parameters()`` order; returns the K prior values, row k depending on
    row k only. ``batch_key``: equal keys mean the same function of theta (the batched
    trainer evaluates one site's prior for every site of a group).
    """

    def __call__(self) -> torch.Tensor: ...

    @property
    def batch_key(self) -> bytes: ...

    def stacked(self, flat: torch.Tensor) -> torch.Tensor: ...


class ClassWeighting(enum.Enum):
    """How the data term weights the classes (``[training] class_weighting``).

    NONE: plain mean cross-entropy.
    BALANCED: inverse class frequency at the site, w_c = n / (K n_c) (scikit-learn's
    "balanced"), for the NON-PRIVATE trainer only: the counts n_c are a statistic of
    the site's records, and under DP-SGD they would make every record's weight depend
    on every other record (adding one patient changes all weights), which the per-record
    clipping bound does not cover. DP-SGD sites use ``class_weights`` (declared, public)
    or none; see ``dp_class_weights``.
    """

    NONE = "none"
    BALANCED = "balanced"


class DecisionThreshold(enum.Enum):
    """How a site's personalised model turns probabilities into a class (``[training] threshold``).

    ARGMAX: the most probable class (p >= 0.5 for two classes).
    VALIDATION: each training site holds out ``threshold_fraction`` of its training rows
    (stratified, never trained on) and, for a binary task, predicts class 1 when
    p(1 | x) >= t with t maximising balanced accuracy on those rows
    (``fedmap_secure.fedmap.threshold``). The threshold stays at the site, with its
    personalised model.
    """

    ARGMAX = "argmax"
    VALIDATION = "validation"


class DpPersonalised(enum.Enum):
    """A DP-SGD site's personalised model (``[training] dp_personalised``).

    Every round's DP-trained model is theta_r = gamma_r + d_r: the round's global model
    plus a displacement whose DP noise is fresh each round while the site's own direction
    persists. The contribution vector and the score always use the round's theta_r; this
    only chooses what the site keeps, evaluates and writes (it stays at the site). Each
    choice is post-processing of the site's own DP outputs: no privacy cost.

    LAST: the last round's theta_r (FedMAP as published).
    AVERAGE: mean of theta_r over the last ``dp_average_rounds`` rounds (tail averaging).
    SHRUNK: mean gamma_r plus the mean d_r shrunk by the positive-part James-Stein factor,
    its noise level estimated from the spread of the d_r across those rounds
    (``fedmap_secure.fedmap.dp_personalisation``).
    """

    LAST = "last"
    AVERAGE = "average"
    SHRUNK = "shrunk"


@dataclass(frozen=True, kw_only=True)
class LocalTrainingConfig:
    """Hyper-parameters of one site's local MAP training in one round.

    Defaults follow the FedMAP reference code: Adam (lr 1e-3, weight decay
    1e-5), gradient-norm clipping 1.0, a few epochs with early stopping on a
    held-out validation part of the site's training data.
    """

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip_norm: float = 1.0
    patience: int = 2
    validation_fraction: float = 0.2
    class_weighting: ClassWeighting = ClassWeighting.NONE
    class_weights: tuple[float, ...] = ()
    """Declared per-class loss weights (public, the same at every site); both trainers use
    them, DP-SGD included (a public weight scales a record's loss before its gradient is
    clipped, so the sensitivity stays the clipping bound). Empty: no declared weights."""
    threshold: DecisionThreshold = DecisionThreshold.ARGMAX
    threshold_fraction: float = 0.2
    """Share of a site's training rows held out to choose its threshold (VALIDATION only)."""
    dp_learning_rate: float | None = None
    """Adam learning rate of the DP-SGD trainer (None: ``learning_rate``). Tuned separately:
    the noisy, clipped gradient of a fixed number of steps wants a different step size."""
    dp_personalised: DpPersonalised = DpPersonalised.AVERAGE
    """DP-SGD sites only: which model the site keeps as its personalised model (see
    ``DpPersonalised``; post-processing of its own DP-trained models, no privacy cost)."""
    dp_average_rounds: int = 10
    """The K last training calls ``dp_personalised = "average" | "shrunk"`` use (>= 2)."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ConfigError("epochs and batch_size must be >= 1, patience >= 0")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError("validation_fraction must be in [0, 1)")
        if not (self.learning_rate > 0 and self.weight_decay >= 0 and self.grad_clip_norm > 0):
            raise ConfigError("learning_rate and grad_clip_norm must be > 0, weight_decay >= 0")
        if not 0.0 < self.threshold_fraction < 1.0:
            raise ConfigError("threshold_fraction must be in (0, 1)")
        if self.dp_learning_rate is not None and not self.dp_learning_rate > 0:
            raise ConfigError("dp_learning_rate must be > 0")
        if isinstance(self.dp_average_rounds, bool) or self.dp_average_rounds < 2:
            raise ConfigError("dp_average_rounds must be an integer >= 2")
        if any(not (math.isfinite(w) and w > 0) for w in self.class_weights):
            raise ConfigError("class_weights must be finite and > 0")
        if self.class_weights and self.class_weighting is not ClassWeighting.NONE:
            raise ConfigError(
                "class_weights (declared) and class_weighting = "
                f"{self.class_weighting.value!r} (from the site's counts) exclude each other"
            )

    def dp_class_weights(self) -> tuple[float, ...]:
        """The class weights a DP-SGD trainer may use: the declared ones only (public)."""
        return self.class_weights


@dataclass(frozen=True, kw_only=True)
class LocalTrainingResult:
    """What one call of ``LocalTrainer.train`` did (stays at the site)."""

    epochs_run: int
    steps: int
    final_train_loss: float


class LocalTrainer(Protocol):
    def train(
        self,
        model: torch.nn.Module,
        x_train: npt.NDArray[np.float32],
        y_train: npt.NDArray[np.int64],
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> LocalTrainingResult:
        """Train ``model`` in place on the site's data under ``prior``."""
        ...


def loss_class_weights(
    config: LocalTrainingConfig, y: torch.Tensor, n_classes: int
) -> torch.Tensor | None:
    """The ``weight`` argument of the non-private trainer's cross-entropy (None: unweighted).

    Declared weights must name every class; "balanced" gives w_c = n / (K n_c) for the
    classes present (an absent class gets weight 1: it never appears in the loss).
    """
    import torch  # here, not at module level: the config (and the CLI) load without torch

    if config.class_weights:
        if len(config.class_weights) != n_classes:
            raise ConfigError(
                f"class_weights has {len(config.class_weights)} entries, the model {n_classes} "
                "classes"
            )
        return torch.tensor(config.class_weights, dtype=torch.float32)
    if config.class_weighting is ClassWeighting.NONE:
        return None
    counts = torch.bincount(y, minlength=n_classes).to(torch.float32)
    present = counts > 0
    k = float(present.sum())
    weights = torch.ones(n_classes, dtype=torch.float32)
    weights[present] = float(y.numel()) / (k * counts[present])
    return weights
