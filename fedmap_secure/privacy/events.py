"""The vocabulary of privacy releases: one typed, validated event per mechanism.

Every quantity a site releases that depends on its records is described, before
it leaves the site, by one of these events. The privacy model throughout is
**record-level (example-level) differential privacy under replace-one
adjacency** (``adjacency.py``): two datasets are neighbours when they have the
same size and differ in one patient record; each site's size n_k is public.
All sensitivities below are L2 sensitivities under that relation.

- ``SubsampledGaussianEvent``: ``steps`` iterations of DP-SGD. Each step
  includes every record independently with probability ``sample_rate``
  (Poisson subsampling), clips each per-record gradient to L2 norm C and adds
  N(0, (noise_multiplier * C)^2) to the sum (a replaced record moves the sum
  by up to 2C; the accountants model the replace-one pair of mixtures) (Abadi et al. 2016; Mironov,
  Talwar and Zhang 2019 for its RDP).
- ``GaussianEvent``: ``count`` releases of a statistic with L2 sensitivity S
  plus N(0, (noise_multiplier * S)^2), without subsampling (Dwork and Roth
  2014; Balle and Wang 2018 for the exact curve).
- ``NonPrivateRelease``: a release with no DP guarantee that the operator opted
  into (e.g. clear evaluation counts). It has infinite epsilon, so accountants
  refuse it; the ledger records it only when the budget allows non-DP releases
  and flags every report that contains one (see ``ledger.py``).
- ``ComposedEvent``: several events released together (e.g. one round's
  training plus its contribution score), composed sequentially.

Two events describe a different unit of privacy, **client-level (site-level)
DP** of the securely aggregated sum (see ``fedmap_secure.client_dp``): the
neighbouring run replaces one site's whole contribution by zero in every round.
A ledger holds events of one unit only (``event_unit``).

- ``DistributedDiscreteGaussianEvent``: ``count`` rounds of the distributed
  discrete Gaussian (Kairouz, Liu and Steinke 2021): at least ``noise_shares``
  honest sites each add N_Z(0, s^2) (s = ``local_noise_std``, integer levels)
  to an integer vector of L2 sensitivity ``l2_sensitivity`` and L1 sensitivity
  ``l1_sensitivity`` (integer levels, after rounding) in dimension ``dimension``.
- ``DistributedSkellamEvent``: the same with symmetric Skellam noise of
  variance s^2 per share (Agarwal, Kairouz and Liu 2021).

Both are accounted through their zero-concentrated DP parameters (``zcdp``).

Events are frozen, keyword-only and validated on construction; invalid
parameters raise ``InvalidMechanismError``. ``to_json``/``event_from_json`` give
a closed, tagged JSON form for durable storage (no pickle).

This module is sans-I/O: no torch, no clock, no filesystem.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedmap_secure.errors import InvalidMechanismError
from fedmap_secure.privacy.adjacency import RECORD_UNIT

JsonDict = dict[str, Any]

MAX_DESCRIPTION_LENGTH = 500
MAX_COMPOSITION_DEPTH = 8


def _check_number(owner: str, name: str, value: object) -> float:
    """Return ``value`` as a finite float, refusing bools, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidMechanismError(f"{owner}.{name} must be a number, got {type(value).__name__}")
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InvalidMechanismError(f"{owner}.{name} must be finite, got {as_float!r}")
    return as_float


def _check_count(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMechanismError(f"{owner}.{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise InvalidMechanismError(f"{owner}.{name} must be >= 1, got {value}")
    return value


def _check_keys(data: Mapping[str, Any], tag: str, keys: frozenset[str]) -> None:
    if data.get("type") != tag:
        raise InvalidMechanismError(f"expected event type {tag!r}, got {data.get('type')!r}")
    found = frozenset(data) - {"type"}
    if found != keys:
        raise InvalidMechanismError(
            f"event {tag!r}: expected fields {sorted(keys)}, got {sorted(found)}"
        )


@dataclass(frozen=True, kw_only=True)
class SubsampledGaussianEvent:
    """``steps`` DP-SGD steps: Poisson sampling rate q, Gaussian noise sigma * C.

    Requires noise_multiplier > 0 (finite), 0 < sample_rate <= 1, steps >= 1.
    With sample_rate == 1 every record is in every step (the replace-one
    sensitivity of the sum is then 2C; accountants handle it).
    """

    TAG = "subsampled_gaussian"

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        owner = "SubsampledGaussianEvent"
        sigma = _check_number(owner, "noise_multiplier", self.noise_multiplier)
        rate = _check_number(owner, "sample_rate", self.sample_rate)
        if sigma <= 0:
            raise InvalidMechanismError(f"{owner}.noise_multiplier must be > 0, got {sigma!r}")
        if not 0 < rate <= 1:
            raise InvalidMechanismError(f"{owner}.sample_rate must be in (0, 1], got {rate!r}")
        object.__setattr__(self, "noise_multiplier", sigma)
        object.__setattr__(self, "sample_rate", rate)
        object.__setattr__(self, "steps", _check_count(owner, "steps", self.steps))

    def describe(self) -> str:
        return (
            f"Poisson-subsampled Gaussian x{self.steps} steps "
            f"(noise multiplier {self.noise_multiplier:g}, sample rate {self.sample_rate:g})"
        )

    def to_json(self) -> JsonDict:
        return {
            "type": self.TAG,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubsampledGaussianEvent:
        _check_keys(data, cls.TAG, frozenset({"noise_multiplier", "sample_rate", "steps"}))
        return cls(
            noise_multiplier=data["noise_multiplier"],
            sample_rate=data["sample_rate"],
            steps=data["steps"],
        )


@dataclass(frozen=True, kw_only=True)
class GaussianEvent:
    """``count`` Gaussian-mechanism releases, each with std = noise_multiplier * sensitivity.

    Requires noise_multiplier > 0 (finite) and count >= 1. The caller is
    responsible for bounding the released statistic's L2 sensitivity (e.g. by
    clipping each record's contribution) and scaling the noise to it.
    """

    TAG = "gaussian"

    noise_multiplier: float
    count: int = 1

    def __post_init__(self) -> None:
        owner = "GaussianEvent"
        sigma = _check_number(owner, "noise_multiplier", self.noise_multiplier)
        if sigma <= 0:
            raise InvalidMechanismError(f"{owner}.noise_multiplier must be > 0, got {sigma!r}")
        object.__setattr__(self, "noise_multiplier", sigma)
        object.__setattr__(self, "count", _check_count(owner, "count", self.count))

    def describe(self) -> str:
        return f"Gaussian x{self.count} (noise multiplier {self.noise_multiplier:g})"

    def to_json(self) -> JsonDict:
        return {"type": self.TAG, "noise_multiplier": self.noise_multiplier, "count": self.count}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GaussianEvent:
        _check_keys(data, cls.TAG, frozenset({"noise_multiplier", "count"}))
        return cls(noise_multiplier=data["noise_multiplier"], count=data["count"])


@dataclass(frozen=True, kw_only=True)
class NonPrivateRelease:
    """A release without any DP guarantee, which the operator explicitly allowed.

    No accountant supports it (its epsilon is infinite). The ledger refuses it
    unless ``Budget.allow_non_dp_releases`` is set; when allowed it is stored,
    excluded from the epsilon composition, and every report carries a flag that
    the (epsilon, delta) statement does not cover it.
    """

    TAG = "non_private"

    description: str

    def __post_init__(self) -> None:
        if not isinstance(self.description, str) or not self.description.strip():
            raise InvalidMechanismError("NonPrivateRelease.description must be a non-empty str")
        if len(self.description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidMechanismError(
                f"NonPrivateRelease.description longer than {MAX_DESCRIPTION_LENGTH} characters"
            )

    def describe(self) -> str:
        return f"NON-DP release: {self.description}"

    def to_json(self) -> JsonDict:
        return {"type": self.TAG, "description": self.description}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NonPrivateRelease:
        _check_keys(data, cls.TAG, frozenset({"description"}))
        return cls(description=data["description"])


@dataclass(frozen=True, kw_only=True)
class ComposedEvent:
    """Sequential composition of a non-empty tuple of events (nesting allowed, depth <= 8)."""

    TAG = "composed"

    events: tuple[Event, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.events, tuple) or not self.events:
            raise InvalidMechanismError("ComposedEvent.events must be a non-empty tuple")
        for event in self.events:
            if not isinstance(event, EVENT_TYPES):
                raise InvalidMechanismError(
                    f"ComposedEvent.events holds a {type(event).__name__}, not an event"
                )
        if _depth(self) > MAX_COMPOSITION_DEPTH:
            raise InvalidMechanismError(f"ComposedEvent nested deeper than {MAX_COMPOSITION_DEPTH}")

    def describe(self) -> str:
        return " + ".join(event.describe() for event in self.events)

    def to_json(self) -> JsonDict:
        return {"type": self.TAG, "events": [event.to_json() for event in self.events]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ComposedEvent:
        _check_keys(data, cls.TAG, frozenset({"events"}))
        items = data["events"]
        if not isinstance(items, list):
            raise InvalidMechanismError("event 'composed': 'events' must be a list")
        return cls(events=tuple(event_from_json(item) for item in items))


@dataclass(frozen=True, kw_only=True)
class _DistributedIntegerNoise:
    """Shared fields and checks of the two client-level mechanisms (see module docstring)."""

    l2_sensitivity: float
    l1_sensitivity: float
    local_noise_std: float
    noise_shares: int
    dimension: int
    count: int = 1

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("l2_sensitivity", "l1_sensitivity", "local_noise_std"):
            value = _check_number(owner, name, getattr(self, name))
            if value <= 0:
                raise InvalidMechanismError(f"{owner}.{name} must be > 0, got {value!r}")
            object.__setattr__(self, name, value)
        for name in ("noise_shares", "dimension", "count"):
            object.__setattr__(self, name, _check_count(owner, name, getattr(self, name)))
        if self.l1_sensitivity < self.l2_sensitivity:
            raise InvalidMechanismError(f"{owner}: l1_sensitivity must be >= l2_sensitivity")

    @property
    def total_variance(self) -> float:
        """Variance per coordinate of the summed noise of the guaranteed honest shares."""
        return self.noise_shares * self.local_noise_std**2

    def _fields_json(self) -> JsonDict:
        return {
            "l2_sensitivity": self.l2_sensitivity,
            "l1_sensitivity": self.l1_sensitivity,
            "local_noise_std": self.local_noise_std,
            "noise_shares": self.noise_shares,
            "dimension": self.dimension,
            "count": self.count,
        }

    _FIELDS = frozenset(
        {
            "l2_sensitivity",
            "l1_sensitivity",
            "local_noise_std",
            "noise_shares",
            "dimension",
            "count",
        }
    )


@dataclass(frozen=True, kw_only=True)
class DistributedDiscreteGaussianEvent(_DistributedIntegerNoise):
    """``count`` rounds of the distributed discrete Gaussian (client-level).

    ``zcdp`` is Kairouz, Liu and Steinke (2021), Prop. 14 / Thm. 1, second term:
    with S = sqrt(noise_shares) * s, a2 = Delta_2 / S, a1 = Delta_1 / S and
    tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1)) (n = noise_shares),
    each round is rho-zCDP with rho = (a2^2 + 2 a1 tau + tau^2 d) / 2. (tau
    measures how far a sum of discrete Gaussians is from a discrete Gaussian;
    it vanishes for s >~ 2.)
    """

    TAG = "distributed_discrete_gaussian"

    def tau(self) -> float:
        s2, n = self.local_noise_std**2, self.noise_shares
        return 10.0 * sum(math.exp(-2.0 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, n))

    def zcdp(self) -> tuple[float, float]:
        """(rho, xi) of ONE round: RDP(alpha) <= xi + rho * alpha for every alpha > 1."""
        scale = math.sqrt(self.total_variance)
        a2, a1, tau = self.l2_sensitivity / scale, self.l1_sensitivity / scale, self.tau()
        return 0.5 * (a2**2 + 2.0 * a1 * tau + tau**2 * self.dimension), 0.0

    def describe(self) -> str:
        return (
            f"client-level distributed discrete Gaussian x{self.count} rounds (L2 sensitivity "
            f"{self.l2_sensitivity:g}, noise std {self.local_noise_std:g} x "
            f"{self.noise_shares} shares, dim {self.dimension})"
        )

    def to_json(self) -> JsonDict:
        return {"type": self.TAG, **self._fields_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DistributedDiscreteGaussianEvent:
        _check_keys(data, cls.TAG, cls._FIELDS)
        return cls(**{k: data[k] for k in cls._FIELDS})


@dataclass(frozen=True, kw_only=True)
class DistributedSkellamEvent(_DistributedIntegerNoise):
    """``count`` rounds of the distributed Skellam mechanism (client-level).

    Sums of independent symmetric Skellam variables are symmetric Skellam, so
    the honest shares add up to Skellam noise of variance V = noise_shares * s^2.
    Agarwal, Kairouz and Liu (2021), Thm. 3.5 (first branch of its minimum):
    RDP(alpha) <= alpha Delta_2^2 / (2V) + ((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 V^2),
    i.e. rho = Delta_2^2 / (2V) + Delta_2^2 / (2V^2) and
    xi = (6 Delta_1 - Delta_2^2) / (4 V^2), raised to 0 when negative (a looser,
    still valid bound).
    """

    TAG = "distributed_skellam"

    def zcdp(self) -> tuple[float, float]:
        """(rho, xi) of ONE round: RDP(alpha) <= xi + rho * alpha for every alpha > 1."""
        v, d2, d1 = self.total_variance, self.l2_sensitivity**2, self.l1_sensitivity
        return d2 / (2.0 * v) + d2 / (2.0 * v * v), max(0.0, (6.0 * d1 - d2) / (4.0 * v * v))

    def describe(self) -> str:
        return (
            f"client-level distributed Skellam x{self.count} rounds (L2 sensitivity "
            f"{self.l2_sensitivity:g}, noise std {self.local_noise_std:g} x "
            f"{self.noise_shares} shares, dim {self.dimension})"
        )

    def to_json(self) -> JsonDict:
        return {"type": self.TAG, **self._fields_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DistributedSkellamEvent:
        _check_keys(data, cls.TAG, cls._FIELDS)
        return cls(**{k: data[k] for k in cls._FIELDS})


ClientLevelEvent = DistributedDiscreteGaussianEvent | DistributedSkellamEvent
"""A client-level (site-level) event of the securely aggregated sum."""

Event = (
    SubsampledGaussianEvent
    | GaussianEvent
    | NonPrivateRelease
    | DistributedDiscreteGaussianEvent
    | DistributedSkellamEvent
    | ComposedEvent
)
"""Any privacy event (closed set)."""

LeafEvent = (
    SubsampledGaussianEvent
    | GaussianEvent
    | NonPrivateRelease
    | DistributedDiscreteGaussianEvent
    | DistributedSkellamEvent
)
"""An event that is not a composition."""

EVENT_TYPES = (
    SubsampledGaussianEvent,
    GaussianEvent,
    NonPrivateRelease,
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    ComposedEvent,
)


class PrivacyUnit(enum.Enum):
    """What one ledger's guarantee protects."""

    RECORD = RECORD_UNIT
    CLIENT = "client-level, one site's whole contribution replaced by zero (zero-out adjacency)"


def event_unit(event: LeafEvent) -> PrivacyUnit:
    """The privacy unit an event's guarantee is stated in."""
    if isinstance(event, DistributedDiscreteGaussianEvent | DistributedSkellamEvent):
        return PrivacyUnit.CLIENT
    return PrivacyUnit.RECORD


_BY_TAG: dict[str, type[Event]] = {cls.TAG: cls for cls in EVENT_TYPES}


def _depth(event: Event) -> int:
    if isinstance(event, ComposedEvent):
        return 1 + max(_depth(inner) for inner in event.events)
    return 0


def event_from_json(data: object) -> Event:
    """Decode one event from its tagged JSON dict; unknown tags or fields raise."""
    if not isinstance(data, dict):
        raise InvalidMechanismError(f"an event must be a JSON object, got {type(data).__name__}")
    tag = data.get("type")
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise InvalidMechanismError(f"unknown event type {tag!r}")
    return cls.from_json(data)


def flatten(events: tuple[Event, ...] | list[Event]) -> tuple[LeafEvent, ...]:
    """All leaf events in order, compositions expanded."""
    leaves: list[LeafEvent] = []
    for event in events:
        if isinstance(event, ComposedEvent):
            leaves.extend(flatten(event.events))
        else:
            leaves.append(event)
    return tuple(leaves)


def check_events(events: object) -> tuple[Event, ...]:
    """Validate a caller-supplied sequence of events and return it as a tuple."""
    if isinstance(events, str | bytes) or not isinstance(events, tuple | list):
        raise InvalidMechanismError("events must be a list or tuple of events")
    for event in events:
        if not isinstance(event, EVENT_TYPES):
            raise InvalidMechanismError(f"{type(event).__name__} is not a privacy event")
    return tuple(events)
