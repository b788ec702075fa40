"""DP-SGD local MAP training with Opacus: the private ``LocalTrainer``.

Objective (FedMAP local step): minimise ``mean_i loss(theta; x_i, y_i) + R(theta)``
where the prior ``R(theta) = R_psi(theta, gamma)`` depends on parameters only.

One step, in this order (Poisson sampling rate q, clipping bound C, noise sigma):

1. Keep each record independently with probability q (CSPRNG Bernoulli draws).
2. Per-sample gradients of the *data* loss (Opacus GradSampleModule, or ghost
   clipping's norms), each clipped to norm C, summed, plus N(0, (sigma C)^2 I),
   divided by the expected batch size q n: Opacus' ``DPOptimizer.pre_step``.
3. Add ``grad R(theta)``, computed with ``torch.autograd.grad`` on the
   parameters with Opacus' hooks disabled. It depends on no record, so adding
   it after noising is post-processing and costs no privacy.
4. The inner optimizer (Adam or SGD) steps.

Why step 3 is separate: ``DPOptimizer`` overwrites ``p.grad`` with the clipped,
noised per-sample sum, so a prior term added to the loss before ``backward``
is silently dropped (a per-sample hook never sees a batch-level term, and the
``p.grad`` it produced is replaced); FedMAP would degrade into plain DP-SGD
with no error. ``tests/unit/test_dp_training.py`` demonstrates this.

Fixed step count: training always runs ``DpSgdConfig.steps_for(n)`` steps, so
the charge is known beforehand (check, then commit) and no validation-based
early stopping touches data outside the accounting. Empty Poisson batches
still take a (noise-only) step: the accountant counts them.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch
from opacus.grad_sample.gsm_base import AbstractGradSampleModule
from opacus.grad_sample.utils import get_gsm_class
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping
from opacus.validators import ModuleValidator

from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.training.dp_config import (
    DpSgdConfig,
    DpTrainingResult,
    GradSampleMode,
    InnerOptimizer,
    PlannedMechanism,
    steps_per_epoch,
)
from fedmap_secure.training.dp_optimizer import (
    InjectedNoiseDPOptimizer,
    InjectedNoiseGhostDPOptimizer,
)
from fedmap_secure.training.dp_randomness import CsprngRandomness, DpRandomness, TorchRandomness
from fedmap_secure.training.interface import PriorFn
from fedmap_secure.training.secure_noise import CsprngStream, SecureGaussian

DpOptimizer = InjectedNoiseDPOptimizer | InjectedNoiseGhostDPOptimizer
_LEFTOVER_PARAM_ATTRS = ("grad_sample", "summed_grad", "_forward_counter", "_norm_sample")


class DpSgdMapTrainer:
    """``LocalTrainer`` running DP-SGD on the data term and the exact prior gradient.

    ``stream_label`` names this trainer's seeded noise stream when
    ``reproducible_seed`` is set (use the site id: sites must not share it).
    One trainer keeps one noise stream across rounds, so a seeded run never
    repeats noise from one round to the next.
    """

    def __init__(self, config: DpSgdConfig, *, stream_label: str = "site") -> None:
        self.config = config
        self._secure: CsprngRandomness | None = None
        if config.secure_noise:
            stream = (
                CsprngStream.os()
                if config.reproducible_seed is None
                else CsprngStream.seeded(config.reproducible_seed, label=stream_label)
            )
            self._secure = CsprngRandomness(SecureGaussian(stream))
        self._seeded_torch: torch.Generator | None = None
        if not config.secure_noise and config.reproducible_seed is not None:
            self._seeded_torch = torch.Generator().manual_seed(config.reproducible_seed)

    # --- planning (before any data is touched) -------------------------------
    def planned_steps(self, n_train: int) -> int:
        return self.config.steps_for(n_train)

    def planned_mechanism(self, n_train: int) -> PlannedMechanism:
        """What ``train`` on ``n_train`` records will run: charge this before releasing."""
        return PlannedMechanism(
            noise_multiplier=self.config.noise_multiplier,
            sample_rate=self.config.sample_rate_for(n_train),
            steps=self.config.steps_for(n_train),
            max_grad_norm=self.config.max_grad_norm,
        )

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return a DP-compatible model: ``model`` itself, or a fixed copy.

        Layers Opacus cannot give per-sample gradients for (BatchNorm mixes
        records in a batch) are replaced by Opacus' ``ModuleValidator.fix``
        (BatchNorm -> GroupNorm) only when ``fix_incompatible_modules`` is set;
        the site must then use the returned copy. Otherwise raise ConfigError.
        """
        problems = _incompatibilities(model)
        if not problems:
            return model
        if not self.config.fix_incompatible_modules:
            raise ConfigError(f"model is not DP-SGD compatible: {problems}")
        fixed: torch.nn.Module = ModuleValidator.fix(model)
        still = _incompatibilities(fixed)
        if still:
            raise ConfigError(f"model could not be made DP-SGD compatible: {still}")
        return fixed

    # --- LocalTrainer ------------------------------------------------------------
    def train(
        self,
        model: torch.nn.Module,
        x_train: npt.NDArray[np.float32],
        y_train: npt.NDArray[np.int64],
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> DpTrainingResult:
        """Train ``model`` in place; ``generator`` is used only when secure_noise=False."""
        x, y = _as_tensors(x_train, y_train)
        plan = self.planned_mechanism(len(x))
        was_training = model.training
        model.train()
        problems = _incompatibilities(model)
        if problems:
            raise ConfigError(f"model is not DP-SGD compatible (see prepare_model): {problems}")
        randomness = self._randomness(generator)
        try:
            with _grad_sample_module(model, self.config) as gsm:
                loop = _DpLoop(model, gsm, self.config, plan, randomness, len(x))
                loss, empty = loop.run(x, y, prior)
        finally:
            model.train(was_training)
        per_epoch = steps_per_epoch(plan.sample_rate)
        return DpTrainingResult(
            epochs_run=math.ceil(plan.steps / per_epoch),
            steps=plan.steps,
            final_train_loss=loss,
            noise_multiplier=plan.noise_multiplier,
            sample_rate=plan.sample_rate,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=plan.sample_rate * len(x),
            empty_batches=empty,
            grad_sample_mode=self.config.grad_sample_mode,
            noise_source=randomness.kind,
            reproducible=self.config.reproducible_seed is not None,
        )

    def _randomness(self, generator: torch.Generator) -> DpRandomness:
        if self._secure is not None:
            return self._secure
        return TorchRandomness(self._seeded_torch if self._seeded_torch is not None else generator)


class _DpLoop:
    """One ``train`` call's step loop (exists to keep each function short)."""

    def __init__(
        self,
        model: torch.nn.Module,
        gsm: torch.nn.Module,
        config: DpSgdConfig,
        plan: PlannedMechanism,
        randomness: DpRandomness,
        n_train: int,
    ) -> None:
        self.gsm = gsm
        self.config = config
        self.plan = plan
        self.randomness = randomness
        self.n_train = n_train
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.inner = _inner_optimizer(self.params, config)
        self.optimizer = make_dp_optimizer(self.inner, config, plan, randomness, n_train)

    def run(self, x: torch.Tensor, y: torch.Tensor, prior: PriorFn | None) -> tuple[float, int]:
        per_epoch = steps_per_epoch(self.plan.sample_rate)
        last_epoch_start = self.plan.steps - min(per_epoch, self.plan.steps)
        loss_sum, seen, empty = 0.0, 0, 0
        with warnings.catch_warnings():
            # Opacus' full backward hooks warn when the inputs need no gradient (ours never do).
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for step in range(self.plan.steps):
                index = self.randomness.poisson_indices(self.n_train, self.plan.sample_rate)
                batch_loss = self.privatised_data_gradient(x[index], y[index])
                if prior is not None:
                    add_prior_gradient(self.gsm, self.params, prior)
                self.inner.step()
                empty += int(len(index) == 0)
                if step >= last_epoch_start:
                    loss_sum, seen = loss_sum + batch_loss, seen + len(index)
        self.optimizer.zero_grad(set_to_none=True)
        return (loss_sum / seen if seen else float("nan")), empty

    def _class_weight(self, n_classes: int) -> torch.Tensor | None:
        """Declared (public) class weights: they scale a record's loss before its gradient
        is clipped to C, so one record's influence stays bounded by C."""
        weights = self.config.class_weights
        if not weights:
            return None
        if len(weights) != n_classes:
            raise ConfigError(
                f"class_weights has {len(weights)} entries, the model {n_classes} classes"
            )
        return torch.tensor(weights, dtype=torch.float32)

    def privatised_data_gradient(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        """Set ``p.grad`` to the clipped, noised, scaled data gradient; return the loss sum."""
        self.optimizer.zero_grad(set_to_none=True)
        if len(xb) == 0:
            self.optimizer.noisy_step_without_data()
            return 0.0
        logits = self.gsm(xb)
        weight = self._class_weight(logits.shape[1])
        per_sample = torch.nn.functional.cross_entropy(logits, yb, weight=weight, reduction="none")
        if self.config.grad_sample_mode is GradSampleMode.GHOST:
            DPTensorFastGradientClipping(self.gsm, self.optimizer, per_sample, "sum").backward()
        else:
            torch.autograd.backward(per_sample.sum())
        if not self.optimizer.pre_step():
            raise RuntimeError("Opacus skipped a DP step; the accounting would be wrong")
        return float(per_sample.detach().sum())


def add_prior_gradient(
    gsm: torch.nn.Module, params: list[torch.nn.Parameter], prior: PriorFn
) -> None:
    """``p.grad += d prior / d p`` for every trainable parameter (after noising).

    Opacus' hooks are disabled meanwhile, so a prior that happened to run a
    module of the model could not leave activations in the per-sample state.
    """
    hooks_on = bool(getattr(gsm, "hooks_enabled", False))
    _set_hooks(gsm, enabled=False)
    try:
        with torch.enable_grad():
            value = prior()
            if value.numel() != 1:
                raise ConfigError("the prior must return a scalar tensor")
            if not bool(torch.isfinite(value.detach())):
                raise ConfigError("the prior returned a non-finite value")
            grads = torch.autograd.grad(value.reshape(()), params, allow_unused=True)
    finally:
        _set_hooks(gsm, enabled=hooks_on)
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        p.grad = g.detach().clone() if p.grad is None else p.grad + g.detach()


def _set_hooks(gsm: torch.nn.Module, *, enabled: bool) -> None:
    """Switch Opacus' per-sample hooks (a no-op for the ExpandedWeights module)."""
    switch = getattr(gsm, "enable_hooks" if enabled else "disable_hooks", None)
    if callable(switch):
        switch()


def make_dp_optimizer(
    inner: torch.optim.Optimizer,
    config: DpSgdConfig,
    plan: PlannedMechanism,
    randomness: DpRandomness,
    n_train: int,
) -> DpOptimizer:
    """The Opacus DP optimizer for ``config.grad_sample_mode``, with injected noise."""
    cls = (
        InjectedNoiseGhostDPOptimizer
        if config.grad_sample_mode is GradSampleMode.GHOST
        else InjectedNoiseDPOptimizer
    )
    return cls(
        inner,
        randomness=randomness,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=plan.sample_rate * n_train,
    )


def _inner_optimizer(
    params: list[torch.nn.Parameter], config: DpSgdConfig
) -> torch.optim.Optimizer:
    if not params:
        raise ConfigError("the model has no trainable parameters")
    if config.optimizer is InnerOptimizer.ADAM:
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.learning_rate, weight_decay=config.weight_decay)


@contextlib.contextmanager
def _grad_sample_module(
    model: torch.nn.Module, config: DpSgdConfig
) -> Iterator[AbstractGradSampleModule]:
    """Wrap ``model`` for per-sample gradients; always leave it clean afterwards."""
    mode = config.grad_sample_mode
    kwargs: dict[str, object] = {"batch_first": True, "loss_reduction": "sum"}
    if mode is GradSampleMode.FUNCTORCH:
        kwargs["force_functorch"] = True
    if mode is GradSampleMode.GHOST:
        kwargs.update(max_grad_norm=config.max_grad_norm, use_ghost_clipping=True)
    if mode is GradSampleMode.EW:
        _check_expanded_weights_support(model)
    try:
        gsm: AbstractGradSampleModule = get_gsm_class(mode.value)(model, **kwargs)
    except NotImplementedError as exc:
        raise ConfigError(f"Opacus cannot compute per-sample gradients here: {exc}") from exc
    try:
        yield gsm
    finally:
        gsm.to_standard_module()  # removes hooks and Opacus' per-parameter attributes
        for p in model.parameters():
            p.grad = None
            for attr in _LEFTOVER_PARAM_ATTRS:
                if hasattr(p, attr):
                    delattr(p, attr)


_EW_SUPPORTED = (
    torch.nn.Linear,
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.Embedding,
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
)


def _check_expanded_weights_support(model: torch.nn.Module) -> None:
    """torch's ExpandedWeights handles only these layers; refuse others up front."""
    for name, module in model.named_modules():
        owns_params = any(p.requires_grad for p in module.parameters(recurse=False))
        if owns_params and not isinstance(module, _EW_SUPPORTED):
            raise ConfigError(
                f"grad_sample_mode 'ew' cannot handle layer {name or '<root>'} "
                f"({type(module).__name__}); use GradSampleMode.HOOKS"
            )


def _incompatibilities(model: torch.nn.Module) -> list[str]:
    was_training = model.training
    model.train()
    try:
        return [str(e) for e in ModuleValidator.validate(model, strict=False)]
    finally:
        model.train(was_training)


def _as_tensors(
    x_train: npt.NDArray[np.float32], y_train: npt.NDArray[np.int64]
) -> tuple[torch.Tensor, torch.Tensor]:
    if x_train.ndim < 2 or y_train.ndim != 1 or len(x_train) != len(y_train):
        raise DataError(
            "x_train must be (n, *feature_shape) and y_train (n,) with the same n, got "
            f"{x_train.shape} and {y_train.shape}"
        )
    if len(x_train) == 0:
        raise DataError("a site needs at least one training record")
    if not np.all(np.isfinite(x_train)):
        raise DataError("x_train contains NaN or infinite values")
    x = torch.as_tensor(np.ascontiguousarray(x_train), dtype=torch.float32)
    return x, torch.as_tensor(np.ascontiguousarray(y_train), dtype=torch.int64)
