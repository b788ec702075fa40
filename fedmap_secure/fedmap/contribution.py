"""The contribution score omega_k of one site (computed at the site, numpy only).

Reference (FedMAP, ``calculate_contribution``):

    omega_k = exp( (1/N_k) sum_n log p(y_n | x_n, theta_k) - R(theta_k; gamma) / N_k ).

Here the score is made a bounded quantity so that a DP release has a finite
sensitivity:

- each sample's log-likelihood is clipped into [-B, 0] (B = ``loglik_clip``),
  so the mean term lies in [-B, 0] and one sample moves it by at most B / N_k;
- the mean is produced by a ``MeanLoglikRelease``: the exact clipped mean by
  default, or a differentially private release (Gaussian mechanism, see
  ``fedmap_secure.training.dp_score``) dropped in with no change here;
- the log-score is clamped into [log omega_min, log omega_max], so omega lies
  in [omega_min, omega_max] (default [1e-3, 1]). The upper clamp matters
  because the learned part of the prior may be negative (its last bias is
  unconstrained), which could otherwise push omega above 1. The lower clamp
  keeps sum_k omega_k > 0, so the server's division is always defined.

The prior term R(theta_k; gamma) / N_k is a function of the (already
released or DP-trained) theta_k and public gamma: post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import ScoreConfig
from fedmap_secure.errors import ConfigError

MeanLoglikRelease = Callable[[FloatVector, float], float]
"""(per-sample log-likelihoods, clip bound B) -> released mean log-likelihood in [-B, 0]."""


def exact_clipped_mean(per_sample_loglik: FloatVector, clip: float) -> float:
    """mean_n clip(l_n, -B, 0): the non-private release."""
    return float(np.clip(per_sample_loglik, -clip, 0.0).mean())


def contribution_score(
    *,
    per_sample_loglik: FloatVector,
    prior_value: float,
    config: ScoreConfig,
    release: MeanLoglikRelease = exact_clipped_mean,
) -> float:
    """omega = exp(clamp(release(l, B) - prior / N, log omega_min, log omega_max)).

    ``per_sample_loglik`` are the log-likelihoods of the site's N training
    rows under its trained theta_k; ``prior_value`` is R(theta_k; gamma).
    """
    n = int(per_sample_loglik.shape[0])
    if n < 1:
        raise ConfigError("contribution score needs at least one training sample")
    if np.isnan(per_sample_loglik).any() or not math.isfinite(prior_value):
        raise ConfigError("contribution score inputs contain NaN or infinity")
    mean_loglik = release(per_sample_loglik, config.loglik_clip)
    log_score = mean_loglik - prior_value / n
    lo, hi = math.log(config.omega_min), math.log(config.omega_max)
    return math.exp(min(max(log_score, lo), hi))
