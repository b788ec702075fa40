"""Differentially private release of the mean log-likelihood behind FedMAP's omega_k.

FedMAP's contribution score is ``omega_k = exp(mean_i log p(y_i | x_i, theta_k)
- R(theta_k) / N_k)``. The prior term is post-processing of the DP model, but
the mean log-likelihood reads every training record again, so it needs its
own mechanism and its own ledger charge.

Mechanism (Gaussian mechanism on a clipped sum; Dwork and Roth 2014, thm A.1;
Mironov 2017 for its RDP curve ``alpha / (2 sigma^2)``):

* clip each record's log-likelihood into ``[-B, 0]`` (log-likelihoods of a
  classifier are <= 0 already; the lower clip bounds a record's influence);
* ``S = sum_i clip(l_i)``;  release ``S~ = S + N(0, (sigma B)^2)``;
* return ``S~ / N_pub`` (optionally clamped to ``[-B, 0]``: post-processing).

Sensitivity: every clipped term lies in ``[-B, 0]``, so adding or removing one
record (the adjacency DP-SGD's accountants use) changes ``S`` by at most
``B``, and so does replacing one; ``sigma`` is therefore the usual noise
multiplier and the ledger charges ``GaussianEvent(noise_multiplier=sigma,
count=1)`` (``gaussian_release_event_params``).

Choice about N: the divisor ``N_pub`` is the site's size n_k, which the
consortium declares public (``privacy/adjacency.py``): it also leaves the
site in FedAvg/FedProx weights and in summary.json (q_k, delta_k). Every
record-level guarantee is therefore stated under replace-one adjacency, where
neighbouring datasets have the same n_k, and dividing by it is
post-processing. The sensitivity under replace-one is ``B`` (above), so the
charge is the same ``GaussianEvent``.

Threat addressed: a server (or colluding sites) reading omega_k, directly or
through the omega-weighted sums of secure aggregation, learning whether a
given patient was in site k's training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.training.secure_noise import NormalSource, SecureGaussian


@dataclass(frozen=True, kw_only=True)
class GaussianReleaseParams:
    """What the ledger needs to charge one score release (a ``GaussianEvent``)."""

    noise_multiplier: float
    count: int
    sensitivity: float
    noise_std: float


def _check_mechanism(clip: float, noise_multiplier: float) -> None:
    if not (math.isfinite(clip) and clip > 0.0):
        raise ConfigError("clip (the log-likelihood bound B) must be finite and > 0")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0.0):
        raise ConfigError("noise_multiplier must be finite and > 0 for a DP release")


def gaussian_release_event_params(*, clip: float, noise_multiplier: float) -> GaussianReleaseParams:
    """Parameters of the Gaussian mechanism ``release_mean_loglik`` runs once."""
    _check_mechanism(clip, noise_multiplier)
    return GaussianReleaseParams(
        noise_multiplier=noise_multiplier,
        count=1,
        sensitivity=clip,
        noise_std=noise_multiplier * clip,
    )


def clipped_loglik_sum(per_sample_loglik: npt.NDArray[np.floating], clip: float) -> float:
    """``sum_i clip(l_i, -B, 0)``; -inf (probability 0) clips to -B, NaN is refused."""
    values = np.asarray(per_sample_loglik, dtype=np.float64)
    if values.ndim != 1:
        raise DataError("per_sample_loglik must be a 1-D array")
    if np.isnan(values).any():
        raise DataError("per_sample_loglik contains NaN")
    return float(np.clip(values, -clip, 0.0).sum())


def release_mean_loglik(
    per_sample_loglik: npt.NDArray[np.floating],
    *,
    clip: float,
    noise_multiplier: float,
    public_n: int,
    random: NormalSource | None = None,
    clamp: bool = True,
) -> float:
    """The DP mean log-likelihood ``(S + N(0, (sigma B)^2)) / N_pub``; see the module doc.

    ``random`` defaults to the OS-CSPRNG, floating-point-hardened sampler;
    tests may inject any ``standard_normal(n)`` source (e.g. a numpy Generator).
    """
    _check_mechanism(clip, noise_multiplier)
    if isinstance(public_n, bool) or not isinstance(public_n, int) or public_n < 1:
        raise ConfigError("public_n (the declared site size) must be an integer >= 1")
    source = random if random is not None else SecureGaussian()
    total = clipped_loglik_sum(per_sample_loglik, clip)
    noisy = total + float(source.standard_normal(1)[0]) * noise_multiplier * clip
    mean = noisy / public_n
    return min(0.0, max(-clip, mean)) if clamp else mean


def shrink_noisy_mean(
    noisy_mean: float, *, noise_std: float, prior_mean: float, prior_sd: float, clip: float
) -> float:
    """Shrink a DP mean log-likelihood toward a declared prior by its public noise level.

    Maths: with the true mean m ~ N(mu_0, tau^2) a priori (declared, public) and the
    release x = m + e, e ~ N(0, s^2), the posterior mean is
    mu_0 + tau^2 / (tau^2 + s^2) (x - mu_0). s = sigma B / N_pub is public (noise
    multiplier, clip bound, declared size), so this is post-processing of the DP
    release: no privacy cost. Effect: when s >> tau (a small site at a small
    budget) the score stays near exp(mu_0 - R/N), i.e. close to equal weights,
    instead of jumping at random between the clamps omega_min and omega_max; when
    s << tau the data speak. The result is clamped into [-B, 0].
    """
    if not (math.isfinite(noise_std) and noise_std >= 0.0 and prior_sd > 0.0):
        raise ConfigError("noise_std must be finite and >= 0, prior_sd > 0")
    weight = prior_sd**2 / (prior_sd**2 + noise_std**2)
    value = prior_mean + weight * (noisy_mean - prior_mean)
    return min(0.0, max(-clip, value))
