"""The contribution score omega_k of one site (computed at the site, numpy only).

Reference (FedMAP, ``calculate_contribution``):

    omega_k = exp( (1/N_k) sum_n log p(y_n | x_n, theta_k) - R(theta_k; gamma) / N_k ).

Here the score is made a bounded quantity so that a later DP release (the
Gaussian mechanism on log omega) has a finite sensitivity:

- each sample's negative log-likelihood is clipped into [0, C] (C =
  ``loglik_clip``), so the mean term lies in [-C, 0] and replacing one sample
  moves it by at most C / N_k;
- the log-score is clamped into [log omega_min, log omega_max], so omega lies
  in [omega_min, omega_max] (default [1e-3, 1]). The upper clamp matters
  because the learned part of the prior may be negative (its last bias is
  unconstrained), which could otherwise push omega above 1.

The lower clamp also keeps sum_k omega_k > 0, so the server's division by
the aggregated weight is always defined when one site contributes.
"""

from __future__ import annotations

import math

import numpy as np

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.config.schema import ScoreConfig
from fedmap_secure.errors import ConfigError


def contribution_score(
    *, nll_per_sample: FloatVector, prior_value: float, config: ScoreConfig
) -> float:
    """omega = exp(clamp(-mean(min(nll_n, C)) - prior / N, log omega_min, log omega_max)).

    ``nll_per_sample`` are the per-sample negative log-likelihoods of the
    site's training data under its trained theta_k; ``prior_value`` is
    R(theta_k; gamma).
    """
    n = int(nll_per_sample.shape[0])
    if n < 1:
        raise ConfigError("contribution score needs at least one training sample")
    if not (np.all(np.isfinite(nll_per_sample)) and math.isfinite(prior_value)):
        raise ConfigError("contribution score inputs contain NaN or infinity")
    clipped = np.clip(nll_per_sample, 0.0, config.loglik_clip)
    log_score = -float(clipped.mean()) - prior_value / n
    lo, hi = math.log(config.omega_min), math.log(config.omega_max)
    return math.exp(min(max(log_score, lo), hi))
