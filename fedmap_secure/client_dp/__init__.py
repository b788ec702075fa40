"""Client-level distributed DP inside secure aggregation (sans-I/O core).

Each site clips its contribution, rotates it with a public randomized Hadamard
transform, rounds it to integers, adds its share of integer noise (distributed
discrete Gaussian, Kairouz-Liu-Steinke ICML 2021; or Skellam, Agarwal-Kairouz-Liu
NeurIPS 2021) and reduces it into Z_{2^bits} before SecAgg masking, so the
secure sum carries the full noise and no single site's vector is ever seen.
See ``encoding`` for the maths and the threat model.
"""

from __future__ import annotations

from fedmap_secure.client_dp.encoding import (
    DistributedDpEncoder,
    EncodedContribution,
    NoiseKind,
    RingEncoding,
    rounded_l2_bound,
)
from fedmap_secure.client_dp.rotation import RandomizedHadamard, fwht, padded_dimension
from fedmap_secure.client_dp.samplers import discrete_gaussian, poisson, skellam, uniform01

__all__ = [
    "DistributedDpEncoder",
    "EncodedContribution",
    "NoiseKind",
    "RandomizedHadamard",
    "RingEncoding",
    "discrete_gaussian",
    "fwht",
    "padded_dimension",
    "poisson",
    "rounded_l2_bound",
    "skellam",
    "uniform01",
]
