"""User-supplied models: naming the factory for each transport, and checking the module.

In-process, any callable returning a ``torch.nn.Module`` works (a class, a
function, a lambda or closure): it is registered under a process-local name.
With ``transport="grpc"`` and in a real deployment every site process rebuilds
the model itself, so the factory must be importable there: a ``"module:function"``
string, or a top-level function/class of an importable module (not ``__main__``).

:func:`check_model` runs Opacus' ``ModuleValidator.validate`` (what DP-SGD
cannot make private, e.g. BatchNorm, which mixes records in a batch) and
refuses modules with buffers (running statistics are neither trained by DP-SGD
nor aggregated, so the global model would keep their initial values). Opacus'
``ModuleValidator.fix`` is applied only when asked (``fix=True``), never silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fedmap_secure.config.schema import ModelConfig, ModelKind
from fedmap_secure.errors import ConfigError

if TYPE_CHECKING:
    import numpy.typing as npt
    from torch import nn

ModelFactory = Callable[[], "nn.Module"]
"""A callable with no arguments returning a fresh, untrained ``torch.nn.Module``."""


def model_config(model: ModelFactory | str, *, transport: str, fix: bool) -> ModelConfig:
    """Register ``model`` in this process and return the run's ``[model]`` settings."""
    from fedmap_secure.fedmap.models import import_factory, register_model_factory

    if isinstance(model, str):
        factory = import_factory(model)
        name = model
    elif callable(model):
        factory = model
        name = importable_name(model) if transport == "grpc" else _local_name(model)
    else:
        raise ConfigError(f"model must be a callable or 'module:function', got {model!r}")
    register_model_factory(name, factory)
    return ModelConfig(kind=ModelKind.CUSTOM, factory=name, fix=fix)


def importable_name(factory: Callable[..., object]) -> str:
    """``module:qualname`` of a factory a separate process can import, or ConfigError."""
    from fedmap_secure.fedmap.models import import_factory

    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", "")
    hint = (
        "each gRPC site process rebuilds the model, so the factory must be importable "
        "there: pass model='package.module:function' (a top-level function or class of "
        "an importable module)"
    )
    if not module or module == "__main__" or "<" in qualname or not qualname:
        raise ConfigError(f"model factory {qualname or factory!r} is not importable: {hint}")
    name = f"{module}:{qualname}"
    if import_factory(name) is not factory:
        raise ConfigError(f"model factory {name!r} does not import as this object: {hint}")
    return name


def _local_name(factory: Callable[..., object]) -> str:
    qualname = getattr(factory, "__qualname__", type(factory).__name__)
    module = getattr(factory, "__module__", "?")
    return f"python:{module}.{qualname}#{id(factory):x}"


def check_model(
    model: nn.Module,
    *,
    dp: bool,
    sample: npt.NDArray[np.float32] | None = None,
    n_classes: int | None = None,
) -> None:
    """Refuse what would fail or silently go wrong later, naming what must change.

    ``dp``: Opacus must be able to give per-sample gradients (``ModuleValidator``).
    ``sample`` (a few inputs): the module must map them to ``(len(sample), n_classes)``
    logits.
    """
    import torch

    problems: list[str] = []
    buffers = [name for name, b in model.named_buffers() if b is not None]
    if buffers:
        problems.append(
            f"buffers {buffers[:5]} (e.g. BatchNorm running statistics) are neither trained "
            "privately nor aggregated: use GroupNorm/LayerNorm, or fix_model=True"
        )
    if dp:
        from opacus.validators import ModuleValidator

        was_training = model.training
        model.train()
        try:
            errors = ModuleValidator.validate(model, strict=False)
        finally:
            model.train(was_training)
        problems += [f"Opacus: {e}" for e in errors]
    if problems:
        raise ConfigError(
            "the model cannot be trained here as it is: "
            + "; ".join(problems)
            + " (fix_model=True applies opacus' ModuleValidator.fix, e.g. BatchNorm -> GroupNorm)"
        )
    if sample is not None and n_classes is not None:
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.from_numpy(np.ascontiguousarray(sample)))
        except Exception as exc:
            raise ConfigError(
                f"the model failed on inputs of shape {tuple(sample.shape)}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        expected = (len(sample), n_classes)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"the model must return logits of shape (batch, n_classes) = {expected} "
                f"for a classification loss, got {got}"
            )
