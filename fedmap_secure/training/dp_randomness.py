"""The randomness DP-SGD consumes: Gaussian noise tensors and Poisson-sampled batches.

Two implementations of one small interface:

* ``CsprngRandomness`` (default): everything from a ``secure_noise.SecureGaussian``
  (OS CSPRNG, or a seeded ChaCha20 stream when the user asks for a reproducible
  run), with the sum-of-four-Gaussians hardening. This is what a deployment uses.
* ``TorchRandomness``: ``torch.normal`` / ``torch.rand`` with a caller-owned
  ``torch.Generator``. Fast but predictable and not hardened against
  floating-point attacks: for experiments and benchmarks only; the trainer
  reports ``NoiseSourceKind.TORCH_PRNG`` so a summary cannot hide it.
"""

from __future__ import annotations

import enum
import math
from typing import Protocol

import torch

from fedmap_secure.errors import ConfigError
from fedmap_secure.training.secure_noise import SecureGaussian, StreamKind


class NoiseSourceKind(enum.Enum):
    """Which generator produced a run's noise and batches (reported in results)."""

    OS_CSPRNG = "os-csprng"
    SEEDED_CHACHA20 = "seeded-chacha20"
    TORCH_PRNG = "torch-prng"

    @property
    def secure(self) -> bool:
        """True when the noise is unpredictable to anyone without the machine's OS state."""
        return self is NoiseSourceKind.OS_CSPRNG


class DpRandomness(Protocol):
    @property
    def kind(self) -> NoiseSourceKind: ...

    def gaussian_like(self, reference: torch.Tensor, std: float) -> torch.Tensor:
        """N(0, std^2) noise with ``reference``'s shape, dtype and device."""
        ...

    def poisson_indices(self, n: int, rate: float) -> torch.Tensor:
        """Indices (int64, increasing) of the records kept by Bernoulli(rate) each."""
        ...


def _check_std(std: float) -> None:
    if not std >= 0.0 or std == float("inf"):
        raise ConfigError("noise standard deviation must be finite and >= 0")


def hardened_standard_normal(source: SecureGaussian, n: int) -> torch.Tensor:
    """``SecureGaussian.standard_normal`` computed with torch's float64 kernels.

    Same construction and same bits: 4n CSPRNG uniforms -> 4n Box-Muller
    normals -> ``(z1 + z2 + z3 + z4) / 2``; torch's vectorised log/sin/cos are
    about 2.5x faster than numpy's, which matters once per DP step.
    """
    pairs = 2 * n  # 4n normals = 2n Box-Muller pairs
    u = torch.from_numpy(source.uniform(2 * pairs))
    radius = torch.log1p(-u[:pairs]).mul_(-2.0).sqrt_()  # 1 - u in (0, 1]
    angle = u[pairs:].mul(2.0 * math.pi)
    z = torch.empty(2 * pairs, dtype=torch.float64)
    torch.cos(angle, out=z[:pairs])
    torch.sin(angle, out=z[pairs:])
    z[:pairs] *= radius
    z[pairs:] *= radius
    return z.reshape(4, n).sum(dim=0).div_(2.0)


class CsprngRandomness:
    """DP randomness from a CSPRNG with hardened Gaussian sampling."""

    def __init__(self, source: SecureGaussian | None = None) -> None:
        self.source = source if source is not None else SecureGaussian()

    @property
    def kind(self) -> NoiseSourceKind:
        if self.source.stream.kind is StreamKind.SEEDED_CHACHA20:
            return NoiseSourceKind.SEEDED_CHACHA20
        return NoiseSourceKind.OS_CSPRNG

    def gaussian_like(self, reference: torch.Tensor, std: float) -> torch.Tensor:
        _check_std(std)
        if std == 0.0:
            return torch.zeros_like(reference)
        z = hardened_standard_normal(self.source, reference.numel()).mul_(std)  # float64
        return z.to(reference.dtype).reshape(reference.shape)

    def poisson_indices(self, n: int, rate: float) -> torch.Tensor:
        mask = self.source.bernoulli(n, rate)
        return torch.from_numpy(mask.nonzero()[0].astype("int64"))


class TorchRandomness:
    """Insecure, fast DP randomness from a torch generator (experiments only)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    @property
    def kind(self) -> NoiseSourceKind:
        return NoiseSourceKind.TORCH_PRNG

    def gaussian_like(self, reference: torch.Tensor, std: float) -> torch.Tensor:
        _check_std(std)
        if std == 0.0:
            return torch.zeros_like(reference)
        return torch.normal(
            0.0, std, size=reference.shape, generator=self.generator, dtype=reference.dtype
        )

    def poisson_indices(self, n: int, rate: float) -> torch.Tensor:
        if not 0.0 <= rate <= 1.0:
            raise ConfigError("sample rate must be in [0, 1]")
        mask = torch.rand(n, generator=self.generator, dtype=torch.float64) < rate
        return mask.nonzero().reshape(-1)
