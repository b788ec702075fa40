"""The one interface every privacy accountant adapter implements.

An accountant turns a list of events into the smallest epsilon it can prove for
a given delta under record-level DP with its ``adjacency`` (``adjacency.py``:
replace-one for every ledger; add/remove-one only for reproducing published
numbers). Each adapter **checks then composes**: it first verifies it supports
every leaf event and raises ``UnsupportedMechanismError`` naming the first one
it cannot handle, before any computation. ``epsilon([])`` is 0.

Incremental composition: ``state(events)`` composes a history once into an
``AccountantState``; ``state.compose(new)`` returns a *new* state with the new
events composed on (the old one is unchanged, so a ledger can compose onto a
copy, check the budget, and only then keep it). ``state.epsilon(delta)`` must
equal ``epsilon(all events, delta)`` up to the accountant's discretisation.

Sans-I/O.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fedmap_secure.errors import ConfigError, PrivacyError, UnsupportedMechanismError
from fedmap_secure.privacy.adjacency import Adjacency
from fedmap_secure.privacy.events import (
    Event,
    NonPrivateRelease,
    PrivacyUnit,
    check_events,
    event_unit,
    flatten,
)


class AccountantName(enum.StrEnum):
    """Registry names of the supported accountants (also stored in the ledger)."""

    OPACUS_RDP = "opacus-rdp"
    OPACUS_PRV = "opacus-prv"
    DP_ACCOUNTING_RDP = "dp-accounting-rdp"
    DP_ACCOUNTING_PLD = "dp-accounting-pld"


class AccountantState(Protocol):
    """A composed history that new events can be composed onto (see module docstring)."""

    def compose(self, events: Sequence[Event]) -> AccountantState:
        """A new state: this one plus ``events`` (this state is left unchanged)."""
        ...

    def epsilon(self, delta: float) -> float:
        """Epsilon of everything composed so far, at ``delta``."""
        ...


class Accountant(Protocol):
    """Composes events into an (epsilon, delta) guarantee."""

    @property
    def name(self) -> str:
        """The ``AccountantName`` value of this adapter."""
        ...

    @property
    def adjacency(self) -> Adjacency:
        """The record-level neighbouring relation this adapter's epsilons are stated under."""
        ...

    def state(self, events: Sequence[Event]) -> AccountantState:
        """``events`` composed once, ready for incremental ``compose``."""
        ...

    def supports(self, event: Event) -> bool:
        """True when every leaf of ``event`` can be accounted for."""
        ...

    def epsilon(self, events: Sequence[Event], delta: float) -> float:
        """Epsilon of the sequential composition of ``events`` at ``delta`` (an upper bound)."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings (name, conversion, orders, discretisation...) for reports."""
        ...


def supports_dp_leaves(event: Event) -> bool:
    """Support rule of the record-level adapters: every leaf is a DP Gaussian-family event."""
    return all(
        not isinstance(leaf, NonPrivateRelease) and event_unit(leaf) is PrivacyUnit.RECORD
        for leaf in flatten([event])
    )


def supports_dp_and_zcdp_leaves(event: Event) -> bool:
    """Support rule of an adapter that also composes the client-level (zCDP) events."""
    return not any(isinstance(leaf, NonPrivateRelease) for leaf in flatten([event]))


def check_supported(accountant: Accountant, events: Sequence[Event], delta: float) -> None:
    """Validate ``delta`` and raise if ``accountant`` does not support some event."""
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 < delta < 1:
        raise ConfigError(f"delta must be a number in (0, 1), got {delta!r}")
    for event in check_events(events):
        if not accountant.supports(event):
            raise UnsupportedMechanismError(
                f"accountant {accountant.name} does not support {event.describe()}"
            )


def checked_epsilon(value: float, accountant_name: str) -> float:
    """Turn a library result into a float: NaN raises, inf stays inf, negatives become 0.

    A negative value from a conversion formula is still a valid guarantee at
    epsilon = 0, since (eps', delta)-DP with eps' < 0 implies (0, delta)-DP.
    """
    result = float(value)
    if math.isnan(result):
        raise PrivacyError(f"accountant {accountant_name} returned NaN for epsilon")
    return max(result, 0.0)


@dataclass(frozen=True)
class RecomposingState:
    """The generic ``AccountantState``: keeps the events, recomposes them all on ``epsilon``.

    For adapters without a cheaper incremental form; exact by construction.
    """

    accountant: Accountant
    events: tuple[Event, ...]

    def compose(self, events: Sequence[Event]) -> RecomposingState:
        return RecomposingState(self.accountant, (*self.events, *check_events(events)))

    def epsilon(self, delta: float) -> float:
        return self.accountant.epsilon(self.events, delta)


def has_record_level_leaves(events: Sequence[Event]) -> bool:
    """True when some leaf is a record-level DP event (the replace-one conversion applies)."""
    return any(
        not isinstance(leaf, NonPrivateRelease) and event_unit(leaf) is PrivacyUnit.RECORD
        for leaf in flatten(list(events))
    )
