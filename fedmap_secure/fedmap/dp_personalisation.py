"""A DP-SGD site's personalised model from its last K rounds (numpy only).

Setting. In round r a FedMAP site starts from the broadcast gamma_r and DP-SGD trains
theta_r = gamma_r + d_r. Measured on Fed-Heart-Disease (docs/TUNING.md, "FedMAP under
record-level DP"), the displacement d_r is mostly DP noise: Adam normalises every
coordinate by the root of its second moment, which under DP is the noise variance
(sigma C / (q n))^2, so each round moves theta the same distance (about lr x steps per
coordinate) whatever the signal, and the direction is almost all noise (cosine 0.08-0.22
with the noise-free direction). The last theta_r, FedMAP's personalised model, is gamma
plus one round of that noise.

Estimators (p coordinates, K rounds r = 1..K, d_bar = mean_r d_r, gamma_bar = mean_r gamma_r):

- ``tail_average``: mean_r theta_r = gamma_bar + d_bar (Polyak and Juditsky 1992). The noise
  in d_r is fresh each round (independent DP noise), so averaging divides its variance by
  K, while the site's own direction, the same from round to round once gamma settles, stays.
- ``shrunk_average``: gamma_bar + lambda d_bar, lambda the positive-part James-Stein factor
  (James and Stein 1961; Efron and Morris 1973):

      v_hat  = sum_r ||d_r - d_bar||^2 / ((K - 1) p)        (noise variance per coordinate)
      lambda = max(0, 1 - (p - 2) (v_hat / K) / ||d_bar||^2)

  Under d_r = mu + e_r with e_r ~ N(0, v I) independent, gamma_bar + lambda d_bar has lower
  expected squared error in estimating gamma_bar + mu than the plain average for p >= 3
  (Stein's result); when the noise dominates (a small or one-class site at a small budget)
  lambda is 0 and the site keeps the averaged global model; when its deviation is
  consistent across rounds lambda is near 1 and it keeps its own direction. The d_r are
  not identically distributed while gamma still moves, which inflates v_hat: the shrinkage
  errs toward the global model. p < 3: lambda = 1 (no Stein shrinkage exists).

Privacy: every input is the site's own DP-trained model or the public gamma, so the
result is post-processing (no charge); it never leaves the site.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class PersonalisationRecord:
    """How a site's personalised model was formed (its result and ``summary.json``)."""

    rule: str
    """``average`` or ``shrunk`` (``[training] dp_personalised``)."""
    rounds: int
    """How many of the site's DP-trained models it was formed from."""
    shrinkage: float | None
    """lambda of ``shrunk_average`` (None: not shrunk)."""

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "rounds": self.rounds, "shrinkage": self.shrinkage}


@dataclass(frozen=True, kw_only=True)
class Personalised:
    """The personalised parameters and how they were formed."""

    theta: FloatVector
    rounds: int
    shrinkage: float | None
    """lambda of ``shrunk_average`` (None: not shrunk)."""

    def record(self) -> PersonalisationRecord:
        rule = "average" if self.shrinkage is None else "shrunk"
        return PersonalisationRecord(rule=rule, rounds=self.rounds, shrinkage=self.shrinkage)


def _stack(
    thetas: Sequence[FloatVector], gammas: Sequence[FloatVector]
) -> tuple[FloatVector, FloatVector]:
    if not thetas or len(thetas) != len(gammas):
        raise ConfigError("personalisation needs one gamma per theta and at least one round")
    theta = np.stack([np.asarray(t, dtype=np.float64) for t in thetas])
    gamma = np.stack([np.asarray(g, dtype=np.float64) for g in gammas])
    if theta.shape != gamma.shape or theta.ndim != 2:
        raise ConfigError(f"theta and gamma shapes differ: {theta.shape} vs {gamma.shape}")
    return theta, gamma


def tail_average(thetas: Sequence[FloatVector], gammas: Sequence[FloatVector]) -> Personalised:
    """mean_r theta_r (the gammas are only checked for shape)."""
    theta, _ = _stack(thetas, gammas)
    return Personalised(theta=theta.mean(axis=0), rounds=theta.shape[0], shrinkage=None)


def james_stein_factor(displacements: FloatVector) -> float:
    """The positive-part James-Stein factor of the mean of K rows of ``displacements`` (K x p).

    1.0 when it cannot be estimated (K < 2 or p < 3); 0.0 when the mean is exactly zero.
    """
    k, p = displacements.shape
    if k < 2 or p < 3:
        return 1.0
    mean = displacements.mean(axis=0)
    norm2 = float(mean @ mean)
    if norm2 == 0.0:
        return 0.0
    v_hat = float(((displacements - mean) ** 2).sum()) / ((k - 1) * p)
    return float(max(0.0, 1.0 - (p - 2) * (v_hat / k) / norm2))


def shrunk_average(thetas: Sequence[FloatVector], gammas: Sequence[FloatVector]) -> Personalised:
    """mean_r gamma_r + lambda mean_r (theta_r - gamma_r); see the module docstring."""
    theta, gamma = _stack(thetas, gammas)
    displacements = theta - gamma
    factor = james_stein_factor(displacements)
    return Personalised(
        theta=gamma.mean(axis=0) + factor * displacements.mean(axis=0),
        rounds=theta.shape[0],
        shrinkage=factor,
    )
