"""Opacus DP optimizers whose Gaussian noise comes from an injected ``DpRandomness``.

Opacus' ``DPOptimizer.add_noise`` draws ``torch.normal(0, sigma * C)`` from a
torch generator (or from torchcsprng in ``secure_mode``, unavailable on our
platform). We subclass and override only ``add_noise``; clipping
(``clip_and_accumulate``), scaling (``scale_grad``) and the step-hook order are
Opacus' own, and no module-level state of Opacus is patched, so other code in
the process still gets stock Opacus.

Maths (one DP-SGD step, Abadi et al. 2016 with Poisson sampling):
``g = (sum_i clip_C(grad_i) + N(0, (sigma C)^2 I)) / (q N)``, where the sum is
over the Poisson-sampled batch and ``q N`` is the expected batch size.
"""

from __future__ import annotations

import torch
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

from fedmap_secure.errors import PrivacyError
from fedmap_secure.training.dp_randomness import DpRandomness


def _add_injected_noise(optimizer: DPOptimizer, randomness: DpRandomness) -> None:
    """``p.grad = p.summed_grad + N(0, (sigma C)^2)`` for every parameter.

    One draw covers all parameters (then split), so the per-call cost of the
    CSPRNG is paid once per step, not once per tensor.
    """
    std = optimizer.noise_multiplier * optimizer.max_grad_norm
    sums = [p.summed_grad for p in optimizer.params]
    for s in sums:
        if getattr(s, "_processed", False):
            raise PrivacyError(
                "a clipped gradient sum would be noised twice; zero_grad was skipped"
            )
    flat = torch.empty(sum(s.numel() for s in sums), dtype=sums[0].dtype)
    noise = randomness.gaussian_like(flat, std)
    offset = 0
    for p, s in zip(optimizer.params, sums, strict=True):
        part = noise[offset : offset + s.numel()].view_as(s).to(device=s.device, dtype=s.dtype)
        p.grad = (s + part).view_as(p)
        s._processed = True
        offset += s.numel()


def _noisy_step_without_data(optimizer: DPOptimizer, randomness: DpRandomness) -> None:
    """The step for an empty Poisson batch: noise alone, scaled like any other step.

    An empty batch still counts as one step of the subsampled Gaussian
    mechanism, so it must release ``N(0, (sigma C)^2) / (q N)``, not skip.
    """
    for p in optimizer.params:
        p.summed_grad = torch.zeros_like(p)
    _add_injected_noise(optimizer, randomness)
    for p in optimizer.params:
        p.grad /= optimizer.expected_batch_size


class _InjectedNoise:
    """What both optimizers share: Opacus' constructor plus our noise source.

    A mixin placed before the Opacus class in the bases, so ``add_noise``
    overrides Opacus' and ``super().__init__`` reaches the Opacus optimizer.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        randomness: DpRandomness,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
        )
        self.randomness = randomness

    def add_noise(self) -> None:
        _add_injected_noise(self, self.randomness)

    def noisy_step_without_data(self) -> None:
        _noisy_step_without_data(self, self.randomness)


class InjectedNoiseDPOptimizer(_InjectedNoise, DPOptimizer):  # type: ignore[misc]
    """``DPOptimizer`` (per-sample clipping from ``p.grad_sample``) with injected noise."""


class InjectedNoiseGhostDPOptimizer(_InjectedNoise, DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Ghost-clipping ``DPOptimizer`` (clipping done in the double backward) with injected noise."""
