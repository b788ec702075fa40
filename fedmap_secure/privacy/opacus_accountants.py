"""Adapters over Opacus' accounting analysis (RDP and PRV).

Importing ``opacus`` imports torch, so both adapters import it lazily inside
their methods: ``fedmap_secure.privacy`` itself stays torch-free and the
default accountant (dp-accounting PLD) never loads it.

Maths and assumptions (both adapters): Opacus analyses record-level DP under
add/remove-one adjacency only; a ``SubsampledGaussianEvent`` is the Sampled
Gaussian Mechanism with Poisson sampling (Mironov, Talwar and Zhang 2019); a
``GaussianEvent`` is the same mechanism with sampling rate 1. Under the
project's replace-one adjacency (``adjacency.py``, the default) the value is
the group-privacy conversion of the add/remove-one value
(``replace_one_from_add_remove``: (eps, d) -> (2 eps, (1 + e^eps) d)), a valid
but conservative bound; ``adjacency=ADD_REMOVE_ONE`` gives Opacus' own figure
(used to reproduce published numbers).

- ``OpacusRdpAccountant``: per-order RDP from
  ``opacus.accountants.analysis.rdp.compute_rdp`` (exact for integer orders,
  numerically integrated bound for fractional ones), summed over events, then
  converted by ``rdp_to_epsilon`` (Balle et al. 2020 by default, or the classic
  Mironov 2017 conversion). Orders default to Opacus' own list.
- ``OpacusPrvAccountant``: numerical composition of privacy-loss random
  variables (Gopi, Lee and Wutschitz 2021) via Opacus' ``PRVAccountant``; it
  returns the *upper* end of its error interval (``eps_error`` wide), so the
  value is a guarantee, not an estimate.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedmap_secure.errors import ConfigError
from fedmap_secure.privacy.accountant_base import (
    AccountantName,
    RecomposingState,
    check_supported,
    checked_epsilon,
    supports_dp_leaves,
)
from fedmap_secure.privacy.adjacency import (
    RECORD_ADJACENCY,
    Adjacency,
    replace_one_from_add_remove,
)
from fedmap_secure.privacy.composition import mechanism_mix
from fedmap_secure.privacy.events import Event, check_events
from fedmap_secure.privacy.rdp_conversion import RdpConversion, rdp_to_epsilon

OPACUS_DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
)
"""Opacus 1.x ``RDPAccountant.DEFAULT_ALPHAS``: 1.1, 1.2, ..., 10.9, 12, 13, ..., 63."""


@functools.lru_cache(maxsize=256)
def _one_step_rdp(
    sample_rate: float, sigma: float, orders: tuple[float, ...]
) -> npt.NDArray[np.float64]:
    """Opacus' RDP of one Poisson-subsampled Gaussian step at each order (read-only)."""
    from opacus.accountants.analysis import rdp as opacus_rdp

    curve = np.asarray(
        opacus_rdp.compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=1, orders=list(orders)),
        dtype=np.float64,
    )
    curve.flags.writeable = False
    return curve


class OpacusRdpAccountant:
    """RDP accounting with Opacus' SGM analysis and an explicit conversion choice."""

    def __init__(
        self,
        *,
        orders: Sequence[float] = OPACUS_DEFAULT_ORDERS,
        conversion: RdpConversion = RdpConversion.BALLE_2020,
        adjacency: Adjacency = RECORD_ADJACENCY,
    ) -> None:
        self._orders = tuple(float(a) for a in orders)
        if not self._orders or min(self._orders) <= 1:
            raise ConfigError("RDP orders must be a non-empty sequence of values > 1")
        self._conversion = RdpConversion(conversion)
        self._adjacency = Adjacency(adjacency)

    @property
    def name(self) -> str:
        return AccountantName.OPACUS_RDP.value

    @property
    def adjacency(self) -> Adjacency:
        return self._adjacency

    def state(self, events: Sequence[Event]) -> RecomposingState:
        return RecomposingState(self, check_events(events))

    def supports(self, event: Event) -> bool:
        return supports_dp_leaves(event)

    def rdp_curve(self, events: Sequence[Event]) -> npt.NDArray[np.float64]:
        """Composed RDP at each order (sum over events of Opacus' per-event RDP).

        Opacus' ``compute_rdp(q, sigma, steps, orders)`` is the one-step RDP times
        ``steps``; the one-step curve is cached per (q, sigma, orders), so a site's
        repeated mechanism is analysed once per process (the same product as Opacus').
        """
        mix = mechanism_mix(events)
        total = np.zeros(len(self._orders), dtype=np.float64)
        for sigma, rate, steps in mix.subsampled:
            total += _one_step_rdp(rate, sigma, self._orders) * steps
        for sigma, count in mix.gaussian:
            total += _one_step_rdp(1.0, sigma, self._orders) * count
        return total

    def epsilon(self, events: Sequence[Event], delta: float) -> float:
        check_supported(self, events, delta)
        if not events:
            return 0.0
        curve = self.rdp_curve(events)

        def add_remove(d: float) -> float:
            eps, _ = rdp_to_epsilon(self._orders, curve, d, self._conversion)
            return checked_epsilon(eps, self.name)

        if self._adjacency is Adjacency.REPLACE_ONE:
            return replace_one_from_add_remove(add_remove, delta)
        return add_remove(delta)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "RDP of the Poisson-sampled Gaussian (opacus.accountants.analysis.rdp)",
            "conversion": self._conversion.value,
            "orders": [min(self._orders), max(self._orders), len(self._orders)],
            **_adjacency_fields(self._adjacency),
        }


def _adjacency_fields(adjacency: Adjacency) -> dict[str, str]:
    if adjacency is Adjacency.REPLACE_ONE:
        return {
            "adjacency": adjacency.value,
            "adjacency_conversion": "group privacy from add-or-remove-one (2 eps)",
        }
    return {"adjacency": adjacency.value}


class OpacusPrvAccountant:
    """PRV accounting (Gopi et al. 2021) via Opacus; returns the upper error bound."""

    def __init__(
        self,
        *,
        eps_error: float = 0.01,
        delta_error_fraction: float = 1e-3,
        adjacency: Adjacency = RECORD_ADJACENCY,
    ) -> None:
        if not 0 < eps_error < 1 or not 0 < delta_error_fraction < 1:
            raise ConfigError("eps_error and delta_error_fraction must be in (0, 1)")
        self._eps_error = eps_error
        self._delta_error_fraction = delta_error_fraction
        self._adjacency = Adjacency(adjacency)

    @property
    def name(self) -> str:
        return AccountantName.OPACUS_PRV.value

    @property
    def adjacency(self) -> Adjacency:
        return self._adjacency

    def state(self, events: Sequence[Event]) -> RecomposingState:
        return RecomposingState(self, check_events(events))

    def supports(self, event: Event) -> bool:
        return supports_dp_leaves(event)

    def epsilon(self, events: Sequence[Event], delta: float) -> float:
        check_supported(self, events, delta)
        if not events:
            return 0.0
        from opacus.accountants import PRVAccountant

        mix = mechanism_mix(events)
        accountant = PRVAccountant()
        runs = [(s, q, n) for s, q, n in mix.subsampled] + [(s, 1.0, n) for s, n in mix.gaussian]
        for sigma, rate, steps in runs:
            for _ in range(steps):
                accountant.step(noise_multiplier=sigma, sample_rate=rate)

        def add_remove(d: float) -> float:
            with warnings.catch_warnings():
                # Sample rate 1 makes Opacus evaluate log(1 - q) = -inf on purpose; harmless.
                warnings.simplefilter("ignore", RuntimeWarning)
                eps = accountant.get_epsilon(
                    d, eps_error=self._eps_error, delta_error=d * self._delta_error_fraction
                )
            return checked_epsilon(eps, self.name)

        if self._adjacency is Adjacency.REPLACE_ONE:
            return replace_one_from_add_remove(add_remove, delta)
        return add_remove(delta)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "privacy-loss random variables, FFT composition (Gopi et al. 2021)",
            "eps_error": self._eps_error,
            "delta_error": f"{self._delta_error_fraction:g} * delta",
            "bound": "upper",
            **_adjacency_fields(self._adjacency),
        }
