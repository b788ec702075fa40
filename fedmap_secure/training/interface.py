"""The contract between a site's round logic and whatever trains its model.

A ``LocalTrainer`` fits a torch model on one site's training data by
minimising ``mean data loss + prior(theta)``. The prior is a closure over the
fixed (gamma, psi) of the round; it depends on the parameters only, never on
data, so a DP trainer may add its gradient after clipping and noising at no
privacy cost. The non-private trainer and the DP-SGD trainer both implement
this protocol, so the FedMAP round code does not change when DP is switched on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from fedmap_secure.errors import ConfigError

PriorFn = Callable[[], torch.Tensor]
"""Returns the scalar prior R(theta; gamma, psi) for the model's *current* parameters."""


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

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 0:
            raise ConfigError("epochs and batch_size must be >= 1, patience >= 0")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError("validation_fraction must be in [0, 1)")
        if not (self.learning_rate > 0 and self.weight_decay >= 0 and self.grad_clip_norm > 0):
            raise ConfigError("learning_rate and grad_clip_norm must be > 0, weight_decay >= 0")


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
