"""The per-site classifier and flat-vector views of torch parameters.

Models are plain ``nn.Module``s without BatchNorm (so every learnable state is
a parameter and fits the flat-vector contribution). Parameter order is
``named_parameters()`` order throughout.

Custom models (``model.kind = "custom"``): ``build_model`` calls the factory
registered under ``model.factory`` in *this* process. A run configuration
travels from the server to the sites, so it must never make a site import and
run code by itself: a factory is usable only after the process's own operator
registered it (``register_model_factory``; ``allow_importable_factory`` for a
``module:function`` name, which a site process gets from its own job or call).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import ModelConfig, ModelKind
from fedmap_secure.errors import ConfigError

ModelFactory = Callable[[], nn.Module]
"""Builds a fresh, untrained model (called with no arguments, under a seeded torch RNG)."""

_FACTORIES: dict[str, ModelFactory] = {}


def register_model_factory(name: str, factory: ModelFactory) -> None:
    """Let ``build_model`` build ``model.factory == name`` in this process (last one wins)."""
    if not name or not callable(factory):
        raise ConfigError("a model factory needs a name and a callable")
    _FACTORIES[name] = factory


def import_factory(spec: str) -> ModelFactory:
    """The callable named by ``"module:attribute"`` (attribute may be dotted), or ConfigError."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"model factory {spec!r} must be 'module:function'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"model factory {spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"model factory {spec!r}: {module_name!r} has no {attribute!r}")
    if not callable(target):
        raise ConfigError(f"model factory {spec!r} is not callable")
    factory: ModelFactory = target
    return factory


def allow_importable_factory(spec: str) -> None:
    """Import ``module:function`` and register it under that name (the operator's choice)."""
    register_model_factory(spec, import_factory(spec))


def _custom_model(config: ModelConfig) -> nn.Module:
    factory = _FACTORIES.get(config.factory)
    if factory is None:
        raise ConfigError(
            f"model factory {config.factory!r} is not allowed in this process: a site builds "
            "a custom model only when its own operator names it (fedmap_secure.simulate(model=...)"
            ", fedmap_secure.run_site(model=...)), never because a run configuration asks"
        )
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model factory {config.factory!r} returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    if config.fix:
        from opacus.validators import ModuleValidator

        fixed: nn.Module = ModuleValidator.fix(model)
        return fixed
    return model


def build_model(config: ModelConfig, *, n_features: int, n_classes: int, seed: int) -> nn.Module:
    """A logistic regression ``Linear(d, classes)``, an MLP, or the registered custom
    module (``config.factory``), initialised from ``seed``."""
    if n_features < 1 or n_classes < 2:
        raise ConfigError(
            f"model needs >= 1 feature and >= 2 classes, got {n_features}, {n_classes}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.kind is ModelKind.CUSTOM:
            return _custom_model(config)
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
