"""The non-private local MAP trainer (FedMAP reference training loop).

Minimises ``mean cross-entropy(batch) + prior()`` (class-weighted when
``class_weighting`` / ``class_weights`` say so) with Adam (lr and weight
decay from ``LocalTrainingConfig``), clips the gradient norm of every step, shuffles
batches with the site's ``torch.Generator`` and stops early when the loss on
a held-out validation part of the site's training rows stops improving; the
parameters with the best validation loss are restored at the end.

In an in-process simulation the harness may hand the call to a collector
(``training.batched.collector``; ``runtime.batched``) that trains many sites'
calls of this same loop at once (``training.batched.train_stacked``: the same
batches, steps and decisions; the weights equal up to float rounding). A site
process (deployment) has no collector: it runs the loop below.
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmap_secure.errors import DataError
from fedmap_secure.training.interface import (
    LocalTrainingConfig,
    LocalTrainingResult,
    PriorFn,
    loss_class_weights,
)


def validation_split(
    n: int, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, validation) row indices; no validation part if it would be empty or all."""
    perm = torch.randperm(n, generator=generator)
    n_val = int(n * fraction)
    if n_val < 1 or n_val >= n:
        return perm, perm[:0]
    return perm[n_val:], perm[:n_val]


def _objective(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    prior: PriorFn | None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    loss = nn.functional.cross_entropy(model(x), y, weight=weight)
    return loss + prior() if prior is not None else loss


class AdamMapTrainer:
    """Implements ``LocalTrainer`` without differential privacy."""

    def __init__(self, config: LocalTrainingConfig) -> None:
        self.config = config

    def train(
        self,
        model: nn.Module,
        x_train: npt.NDArray[np.float32],
        y_train: npt.NDArray[np.int64],
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> LocalTrainingResult:
        from fedmap_secure.training.batched import TrainJob, collector

        collect = collector()
        if collect is not None:
            job = TrainJob(
                config=self.config,
                model=model,
                x_train=x_train,
                y_train=y_train,
                prior=prior,
                generator=generator,
            )
            return collect(job)
        return self.train_alone(model, x_train, y_train, prior, generator)

    def train_alone(
        self,
        model: nn.Module,
        x_train: npt.NDArray[np.float32],
        y_train: npt.NDArray[np.int64],
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> LocalTrainingResult:
        """The loop of one site (module docstring), whatever the thread's collector."""
        cfg = self.config
        n = int(x_train.shape[0])
        if n < 1:
            raise DataError("local training needs at least one training row")
        x, y = torch.from_numpy(x_train), torch.from_numpy(y_train)
        train_idx, val_idx = validation_split(n, cfg.validation_fraction, generator)
        with torch.no_grad():
            n_classes = int(model(x[:1]).shape[1])
        weight = loss_class_weights(cfg, y, n_classes)
        opt = torch.optim.Adam(
            model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        best_val, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
        steps, epochs_run, epoch_loss = 0, 0, float("nan")
        for _ in range(cfg.epochs):
            model.train()
            order = train_idx[torch.randperm(train_idx.numel(), generator=generator)]
            total = 0.0
            for batch in torch.split(order, cfg.batch_size):
                opt.zero_grad()
                loss = _objective(model, x[batch], y[batch], prior, weight)
                loss.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=cfg.grad_clip_norm)
                opt.step()
                total += float(loss.detach()) * int(batch.numel())
                steps += 1
            epochs_run += 1
            epoch_loss = total / max(int(order.numel()), 1)
            if val_idx.numel() == 0:
                continue
            model.eval()
            with torch.no_grad():
                val = float(_objective(model, x[val_idx], y[val_idx], prior, weight))
            if val < best_val:
                best_val, best_state, stale = val, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        if val_idx.numel() > 0:
            model.load_state_dict(best_state)
        return LocalTrainingResult(epochs_run=epochs_run, steps=steps, final_train_loss=epoch_loss)
