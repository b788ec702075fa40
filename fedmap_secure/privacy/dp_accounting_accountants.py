"""Adapters over Google's dp-accounting library (RDP and PLD).

Each ledger event becomes a dp-accounting ``DpEvent``:
``SubsampledGaussianEvent`` -> ``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)``,
``GaussianEvent`` -> ``SelfComposed(Gaussian(sigma'), count)``, a client-level
event -> ``SelfComposed(ZCDp(rho, xi), count)`` (RDP only); the whole list is a
``ComposedDpEvent`` of the grouped mechanisms (see ``composition.py``). The
library checks support before composing (``accountant.supports``), and so
do we.

Adjacency (``adjacency.py``): replace-one by default (site sizes are public).

- ``DpAccountingPldAccountant``: ``dp_accounting.pld.PLDAccountant`` with
  ``NeighboringRelation.REPLACE_ONE``: privacy-loss distributions composed by
  FFT with a *pessimistic* discretisation (Meiser and Mohammadi 2018; Koskela
  et al. 2020; Doroshenko et al. 2022): the reported epsilon is an upper bound,
  and the tightest of the four accountants. Under REPLACE_ONE the library's
  Gaussian of sensitivity 1 is the pair N(+1, s^2) / N(-1, s^2), i.e. a change
  of 2 between neighbours; a ``GaussianEvent`` states the whole change S, so it
  maps to ``Gaussian(2 sigma)`` (same ratio change / std = 1 / sigma: the
  Gaussian mechanism's privacy depends on nothing else). A DP-SGD step maps to
  ``PoissonSampled(q, Gaussian(sigma))``: the mixtures (1 - q) N(0) + q N(+-C).
  ``value_discretization_interval`` trades tightness for speed; 1e-3 costs
  < 1e-3 relative in epsilon at ~15x the speed of 1e-4.
  Its ``state`` is incremental: the privacy-loss distribution of each
  distinct mechanism is built once per process (cached by its parameters) and
  a charge composes the new round's distribution onto the kept one (one FFT
  convolution), instead of rebuilding every mechanism of the history.
- ``DpAccountingRdpAccountant``: ``dp_accounting.rdp.RdpAccountant`` with its
  default orders (1.1 ... 10.9, 11 ... 63, 128, 256, 512, 1024) and its
  conversion (Canonne, Kamath and Steinke 2020, Prop. 12 = Balle et al. 2020).
  The library's RDP analysis of Poisson sampling is add/remove-one only, so
  under replace-one its record-level value is the group-privacy conversion
  (``adjacency.replace_one_from_add_remove``); client-level zCDP events are
  stated for their own (zero-out) adjacency and are not converted.

Noise multipliers below ``MIN_PLD_NOISE_MULTIPLIER`` are refused by the PLD
adapter: the loss distribution of a near-noiseless Gaussian spans ~1/sigma^2
discretisation steps (a sigma of 1e-8 asked for a 1.46 TiB array); the RDP
accountants compose them in closed form.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
from dp_accounting.pld import PLDAccountant
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from dp_accounting.rdp import RdpAccountant

from fedmap_secure.errors import ConfigError, UnsupportedMechanismError
from fedmap_secure.privacy.accountant_base import (
    AccountantName,
    RecomposingState,
    check_supported,
    checked_epsilon,
    has_record_level_leaves,
    supports_dp_and_zcdp_leaves,
    supports_dp_leaves,
)
from fedmap_secure.privacy.adjacency import (
    RECORD_ADJACENCY,
    Adjacency,
    replace_one_from_add_remove,
)
from fedmap_secure.privacy.composition import mechanism_mix
from fedmap_secure.privacy.events import (
    Event,
    GaussianEvent,
    SubsampledGaussianEvent,
    check_events,
    flatten,
)

_RELATIONS = {
    Adjacency.ADD_REMOVE_ONE: dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
    Adjacency.REPLACE_ONE: dp_accounting.NeighboringRelation.REPLACE_ONE,
}
_ADD_REMOVE = _RELATIONS[Adjacency.ADD_REMOVE_ONE]

MIN_PLD_NOISE_MULTIPLIER = 0.2
"""The PLD adapter refuses (``supports`` is False) any Gaussian noise multiplier below this."""


def _gaussian_scale(adjacency: Adjacency) -> float:
    """Factor from a ``GaussianEvent``'s sigma to the library's under ``adjacency`` (see doc)."""
    return 2.0 if adjacency is Adjacency.REPLACE_ONE else 1.0


def to_dp_event(
    events: Sequence[Event], adjacency: Adjacency = Adjacency.ADD_REMOVE_ONE
) -> dp_accounting.DpEvent:
    """The dp-accounting event equal to the composition of ``events`` (DP leaves only).

    ``adjacency`` is the relation the library will compose under (it rescales
    ``GaussianEvent``; see the module docstring).
    """
    mix = mechanism_mix(events)
    scale = _gaussian_scale(adjacency)
    if mix.non_private:
        raise UnsupportedMechanismError("a non-DP release has no dp-accounting DpEvent")
    parts: list[dp_accounting.DpEvent] = [
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)),
            steps,
        )
        for sigma, rate, steps in mix.subsampled
    ]
    parts += [
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(scale * sigma), count)
        for sigma, count in mix.gaussian
    ]
    parts += [
        dp_accounting.SelfComposedDpEvent(dp_accounting.ZCDpEvent(rho=rho, xi=xi), count)
        for rho, xi, count in mix.zcdp
    ]
    return dp_accounting.ComposedDpEvent(parts)


def _compose(
    accountant: dp_accounting.PrivacyAccountant,
    name: str,
    events: Sequence[Event],
    delta: float,
    adjacency: Adjacency = Adjacency.ADD_REMOVE_ONE,
) -> float:
    event = to_dp_event(events, adjacency)
    if not accountant.supports(event):
        raise UnsupportedMechanismError(f"dp-accounting refused the events for {name}")
    accountant.compose(event)
    return checked_epsilon(accountant.get_epsilon(delta), name)


class DpAccountingRdpAccountant:
    """dp-accounting's RDP accountant (default orders, tighter conversion).

    The only adapter that also composes the client-level events, through
    ``dp_accounting.ZCDpEvent`` (RDP(alpha) = xi + rho * alpha). Under
    replace-one, record-level events go through the group-privacy conversion.
    """

    def __init__(self, *, adjacency: Adjacency = RECORD_ADJACENCY) -> None:
        self._adjacency = Adjacency(adjacency)

    @property
    def name(self) -> str:
        return AccountantName.DP_ACCOUNTING_RDP.value

    @property
    def adjacency(self) -> Adjacency:
        return self._adjacency

    def supports(self, event: Event) -> bool:
        return supports_dp_and_zcdp_leaves(event)

    def _add_remove(self, events: Sequence[Event], delta: float) -> float:
        return _compose(RdpAccountant(neighboring_relation=_ADD_REMOVE), self.name, events, delta)

    def epsilon(self, events: Sequence[Event], delta: float) -> float:
        check_supported(self, events, delta)
        if not events:
            return 0.0
        if self._adjacency is Adjacency.REPLACE_ONE and has_record_level_leaves(events):
            return replace_one_from_add_remove(lambda d: self._add_remove(events, d), delta)
        return self._add_remove(events, delta)

    def state(self, events: Sequence[Event]) -> RecomposingState:
        return RecomposingState(self, check_events(events))

    def describe(self) -> dict[str, Any]:
        converted = self._adjacency is Adjacency.REPLACE_ONE
        return {
            "name": self.name,
            "method": "RDP (dp_accounting.rdp.RdpAccountant, default orders)",
            "conversion": "canonne-kamath-steinke-2020",
            "adjacency": self._adjacency.value,
            **(
                {"adjacency_conversion": "group privacy from add-or-remove-one (2 eps)"}
                if converted
                else {}
            ),
        }


class DpAccountingPldAccountant:
    """dp-accounting's privacy-loss-distribution accountant (pessimistic, upper bound)."""

    def __init__(
        self,
        *,
        value_discretization_interval: float = 1e-3,
        adjacency: Adjacency = RECORD_ADJACENCY,
    ) -> None:
        if not 0 < value_discretization_interval <= 0.1:
            raise ConfigError("value_discretization_interval must be in (0, 0.1]")
        self._interval = value_discretization_interval
        self._adjacency = Adjacency(adjacency)

    @property
    def name(self) -> str:
        return AccountantName.DP_ACCOUNTING_PLD.value

    @property
    def adjacency(self) -> Adjacency:
        return self._adjacency

    @property
    def value_discretization_interval(self) -> float:
        return self._interval

    def supports(self, event: Event) -> bool:
        return supports_dp_leaves(event) and all(
            leaf.noise_multiplier >= MIN_PLD_NOISE_MULTIPLIER
            for leaf in flatten([event])
            if isinstance(leaf, SubsampledGaussianEvent | GaussianEvent)
        )

    def epsilon(self, events: Sequence[Event], delta: float) -> float:
        check_supported(self, events, delta)
        if not events:
            return 0.0
        accountant = PLDAccountant(
            neighboring_relation=_RELATIONS[self._adjacency],
            value_discretization_interval=self._interval,
        )
        return _compose(accountant, self.name, events, delta, self._adjacency)

    def state(self, events: Sequence[Event]) -> PldState:
        return PldState(accountant=self, pld=None, history=()).compose(events)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": "privacy-loss distributions (dp_accounting.pld.PLDAccountant), pessimistic",
            "value_discretization_interval": self._interval,
            "adjacency": self._adjacency.value,
        }


@functools.lru_cache(maxsize=256)
def _mechanism_pld(
    sigma: float, sample_rate: float | None, count: int, relation: str, interval: float
) -> pld_lib.PrivacyLossDistribution:
    """The library's PLD of one grouped mechanism, exactly as ``PLDAccountant`` builds it.

    ``sample_rate`` None: ``count`` Gaussian releases (library std sigma / sqrt(count));
    otherwise ``count`` Poisson-subsampled Gaussian steps (one PLD, self-composed).
    Cached per process: a site composes the same round mechanism every round.
    """
    neighbouring = dp_accounting.NeighboringRelation[relation]
    if sample_rate is None:
        return pld_lib.from_gaussian_mechanism(
            standard_deviation=sigma / math.sqrt(count),
            value_discretization_interval=interval,
            neighboring_relation=neighbouring,
        )
    return pld_lib.from_gaussian_mechanism(
        standard_deviation=sigma,
        value_discretization_interval=interval,
        sampling_prob=sample_rate,
        neighboring_relation=neighbouring,
    ).self_compose(count)


MechanismKey = tuple[float, float | None, int, str, float]
"""The parameters of one grouped mechanism (``_mechanism_pld``'s arguments)."""

_SHARED_MAX = 32
_shared: dict[tuple[MechanismKey, ...], pld_lib.PrivacyLossDistribution] = {}
_shared_epsilon: dict[tuple[tuple[MechanismKey, ...], float], float] = {}


def _shared_compose(
    pld: pld_lib.PrivacyLossDistribution | None,
    history: tuple[MechanismKey, ...],
    part: MechanismKey,
) -> tuple[pld_lib.PrivacyLossDistribution, tuple[MechanismKey, ...]]:
    """``pld`` (the composition of ``history``) composed with ``part``, shared per process.

    Sites with the same plan compose the same sequence of mechanisms; the result
    of each sequence is kept (the ``_SHARED_MAX`` most recent), so the first site
    pays each convolution and the others look it up: the same floats as composing
    again (the same library calls on the same inputs).
    """
    key = (*history, part)
    found = _shared.get(key)
    if found is None:
        mechanism = _mechanism_pld(*part)
        found = mechanism if pld is None else pld.compose(mechanism)
        if len(_shared) >= _SHARED_MAX:
            del _shared[next(iter(_shared))]
        _shared[key] = found
    else:  # most recently used last
        del _shared[key]
        _shared[key] = found
    return found, key


@dataclass(frozen=True)
class PldState:
    """A composed privacy-loss distribution (None: nothing composed yet); immutable.

    ``compose`` convolves the new events' distributions (cached per mechanism)
    onto the kept one and returns a new state; the kept one is never modified,
    so a ledger can compose, check, and discard. ``history`` names the
    mechanisms composed so far, in order: equal histories give equal
    distributions, which are shared by every state of the process
    (``_shared_compose``), and so are their epsilons.
    """

    accountant: DpAccountingPldAccountant
    pld: pld_lib.PrivacyLossDistribution | None
    history: tuple[MechanismKey, ...] = ()

    def compose(self, events: Sequence[Event]) -> PldState:
        checked = check_events(events)
        check_supported(self.accountant, checked, 0.5)
        mix = mechanism_mix(checked)
        relation = _RELATIONS[self.accountant.adjacency].name
        interval = self.accountant.value_discretization_interval
        scale = _gaussian_scale(self.accountant.adjacency)
        parts: list[MechanismKey] = [
            (sigma, rate, steps, relation, interval) for sigma, rate, steps in mix.subsampled
        ]
        parts += [(scale * sigma, None, count, relation, interval) for sigma, count in mix.gaussian]
        pld, history = self.pld, self.history
        for part in parts:
            pld, history = _shared_compose(pld, history, part)
        return PldState(self.accountant, pld, history)

    def epsilon(self, delta: float) -> float:
        if self.pld is None:
            return 0.0
        key = (self.history, delta)
        value = _shared_epsilon.get(key)
        if value is None:
            value = checked_epsilon(self.pld.get_epsilon_for_delta(delta), self.accountant.name)
            if len(_shared_epsilon) >= 4 * _SHARED_MAX:
                _shared_epsilon.clear()
            _shared_epsilon[key] = value
        return value
