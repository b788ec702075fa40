"""The per-site classifier and flat-vector views of torch parameters.

Models are plain ``nn.Module``s without BatchNorm (so every learnable state is
a parameter and fits the flat-vector contribution). Parameter order is
``named_parameters()`` order throughout.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import ModelConfig, ModelKind
from fedmap_secure.errors import ConfigError


def build_model(config: ModelConfig, *, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """A logistic regression ``Linear(d, classes)`` or an MLP, initialised from ``seed``."""
    if n_features < 1 or n_classes < 2:
        raise ConfigError(
            f"model needs >= 1 feature and >= 2 classes, got {n_features}, {n_classes}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.kind is ModelKind.LOGISTIC:
            return nn.Sequential(nn.Linear(n_features, n_classes))
        layers: list[nn.Module] = []
        width = n_features
        for h in config.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        return nn.Sequential(*layers)


def parameter_count(params: Iterable[torch.Tensor]) -> int:
    return sum(int(p.numel()) for p in params)


def flat_vector(params: Iterable[torch.Tensor]) -> FloatVector:
    """Concatenate tensors (detached) into one float64 numpy vector."""
    parts = [p.detach().reshape(-1).to(torch.float64).cpu().numpy() for p in params]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def load_flat_vector(params: Iterable[torch.Tensor], vector: FloatVector) -> None:
    """Copy ``vector`` into ``params`` in order, in place; lengths must match exactly."""
    plist = list(params)
    total = parameter_count(plist)
    if vector.shape != (total,):
        raise ConfigError(f"flat vector has shape {vector.shape}, parameters need ({total},)")
    offset = 0
    with torch.no_grad():
        for p in plist:
            n = int(p.numel())
            chunk = torch.from_numpy(np.ascontiguousarray(vector[offset : offset + n]))
            p.copy_(chunk.reshape(p.shape).to(p.dtype))
            offset += n


def frozen_copies(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies (no grad) of ``params``: a fixed gamma for one round."""
    return [p.detach().clone() for p in params]
