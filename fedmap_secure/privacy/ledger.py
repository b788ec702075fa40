"""A site's privacy ledger: check, then commit, every release against its budget.

The ledger is the site's own evidence for the statement "everything that left
this site did so through mechanisms whose composition is (epsilon, delta)-DP
at the record level" (replace-one adjacency, ``adjacency.py``). It stores
*events*, never epsilons to trust: ``spent()`` and ``history()`` recompute
epsilon from the stored events with the configured accountant, so the report
can always be re-derived from the file.

Incremental accounting: the ledger keeps the composed accountant state of the
stored events in memory (``Accountant.state``, rebuilt once from the file on
the first charge, and again only if another process appended charges in
between). A charge composes its new events onto a *copy* of that state
(the accountants' states are immutable), checks the budget, lets the store
commit the row, and only then keeps the new state: one composition per
charge instead of the whole history. The value equals a full recomposition
to the accountant's discretisation (tested over 25 rounds).

Protocol for a site in each round (the order is the safety argument):

1. describe every planned release as events (DP-SGD steps, contribution score,
   shared metrics...);
2. ``charge(round, events, note=...)``: under the store's write lock it reads
   all stored events, composes them with the new ones, and if the result
   exceeds ``budget.epsilon`` raises ``BudgetExceededError`` having written
   nothing (the site then declines the round); otherwise it commits the charge
   durably and only then returns;
3. release. A crash between 2 and 3 leaves a charge for a release that never
   happened: the ledger can over-count, never under-count.

Non-DP releases (``NonPrivateRelease``) are refused with ``PrivacyError``
unless ``budget.allow_non_dp_releases``; when allowed they are stored, left out
of the epsilon composition (they have no finite epsilon), and every entry and
report from then on is flagged ``non_dp_releases`` so the (epsilon, delta)
statement is never presented as covering them.

This module is sans-I/O: the ``LedgerStore`` protocol is the seam; the SQLite
adapter lives in ``ledger_store.py`` and ``MemoryLedgerStore`` below serves
tests and in-memory simulations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from fedmap_secure.errors import (
    BudgetExceededError,
    ConfigError,
    LedgerIntegrityError,
    LedgerMismatchError,
    PrivacyError,
)
from fedmap_secure.privacy.accountant_base import Accountant, AccountantState
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import (
    Event,
    LeafEvent,
    NonPrivateRelease,
    PrivacyUnit,
    check_events,
    event_from_json,
    event_unit,
    flatten,
)
from fedmap_secure.privacy.noise_source import NoiseSource

MAX_NOTE_LENGTH = 500


@dataclass(frozen=True, kw_only=True)
class LedgerSettings:
    """What a ledger file is bound to for life.

    Budget, delta, non-DP policy, accountant, the record-level ``adjacency``
    its epsilons are stated under, and the ``noise_source`` of its releases.
    """

    epsilon: float
    delta: float
    allow_non_dp_releases: bool
    accountant: str
    adjacency: str
    noise_source: str

    @classmethod
    def of(
        cls,
        budget: Budget,
        accountant: Accountant,
        noise_source: NoiseSource = NoiseSource.OS_CSPRNG,
    ) -> LedgerSettings:
        return cls(
            epsilon=budget.epsilon,
            delta=budget.delta,
            allow_non_dp_releases=budget.allow_non_dp_releases,
            accountant=accountant.name,
            adjacency=accountant.adjacency.value,
            noise_source=NoiseSource(noise_source).value,
        )

    def budget(self) -> Budget:
        return Budget(
            epsilon=self.epsilon,
            delta=self.delta,
            allow_non_dp_releases=self.allow_non_dp_releases,
        )

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: object) -> LedgerSettings:
        try:
            if not isinstance(data, dict) or set(data) != {f.name for f in fields(cls)}:
                raise TypeError("unexpected fields")
            settings = cls(**data)
            settings.budget()
            if not isinstance(settings.accountant, str):
                raise TypeError("accountant must be a str")
            NoiseSource(settings.noise_source)
            if not isinstance(settings.adjacency, str):
                raise TypeError("adjacency must be a str")
        except (TypeError, ValueError, ConfigError) as exc:
            raise LedgerIntegrityError(f"stored ledger settings are invalid: {exc}") from None
        return settings

    def differences(self, other: LedgerSettings) -> list[str]:
        """Human-readable 'field: stored X, configured Y' lines (empty when equal)."""
        return [
            f"{f.name}: stored {getattr(self, f.name)!r}, configured {getattr(other, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]


@dataclass(frozen=True, kw_only=True)
class PendingCharge:
    """A charge the ledger has approved, handed to the store to write."""

    round_index: int
    events: tuple[Event, ...]
    note: str
    epsilon_after: float


@dataclass(frozen=True, kw_only=True)
class StoredCharge:
    """One committed charge as read back from the store (``sequence`` from 1, in order)."""

    sequence: int
    round_index: int
    events: tuple[Event, ...]
    note: str
    epsilon_after: float
    charged_at: str


def events_to_json_text(events: Sequence[Event]) -> str:
    """Canonical JSON text of a list of events (what stores persist)."""
    return json.dumps([e.to_json() for e in events], sort_keys=True, allow_nan=False)


def events_from_json_text(text: str) -> tuple[Event, ...]:
    """Parse stored events; NaN/Infinity literals and any invalid event raise."""

    def refuse(literal: str) -> None:
        raise ValueError(f"non-finite literal {literal}")

    items = json.loads(text, parse_constant=refuse)
    if not isinstance(items, list) or not items:
        raise ValueError("events must be a non-empty JSON list")
    return tuple(event_from_json(item) for item in items)


class LedgerStore(Protocol):
    """Durable storage for one site's ledger (see ``ledger_store.SqliteLedgerStore``)."""

    def initialise_or_read(self, settings: LedgerSettings) -> LedgerSettings:
        """Store ``settings`` if the ledger is new; return the settings it is bound to."""
        ...

    def read_settings(self) -> LedgerSettings | None:
        """The stored settings, or None for a ledger never initialised."""
        ...

    def load(self) -> list[StoredCharge]:
        """Every committed charge in order; a corrupt row raises ``LedgerIntegrityError``."""
        ...

    def append_checked(
        self, decide: Callable[[Sequence[StoredCharge]], PendingCharge]
    ) -> StoredCharge:
        """Atomically: read all charges, call ``decide`` (which may raise: nothing is
        written), durably commit its result, and return it as stored."""
        ...

    def close(self) -> None:
        """Release the underlying resources (file handles, connections)."""
        ...


class MemoryLedgerStore:
    """A ``LedgerStore`` in memory (tests, throw-away simulations). Not durable."""

    def __init__(self, *, now: Callable[[], str] = lambda: "") -> None:
        self._settings: LedgerSettings | None = None
        self._charges: list[StoredCharge] = []
        self._now = now

    def initialise_or_read(self, settings: LedgerSettings) -> LedgerSettings:
        if self._settings is None:
            self._settings = settings
        return self._settings

    def read_settings(self) -> LedgerSettings | None:
        return self._settings

    def load(self) -> list[StoredCharge]:
        return list(self._charges)

    def append_checked(
        self, decide: Callable[[Sequence[StoredCharge]], PendingCharge]
    ) -> StoredCharge:
        pending = decide(list(self._charges))
        stored = StoredCharge(
            sequence=len(self._charges) + 1,
            round_index=pending.round_index,
            events=pending.events,
            note=pending.note,
            epsilon_after=pending.epsilon_after,
            charged_at=self._now(),
        )
        self._charges.append(stored)
        return stored

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True, kw_only=True)
class ChargeReceipt:
    """Proof that a charge was committed; the release may leave the site after this."""

    sequence: int
    round_index: int
    epsilon_after: float
    remaining: float
    charged_at: str
    non_dp_releases: bool


@dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    """One charge with the cumulative epsilon recomputed from the stored events."""

    sequence: int
    round_index: int
    events: tuple[Event, ...]
    note: str
    charged_at: str
    epsilon_cumulative: float
    remaining: float
    epsilon_at_charge: float
    non_dp_releases: bool


def _dp_leaves(events: Sequence[Event]) -> list[LeafEvent]:
    return [leaf for leaf in flatten(list(events)) if not isinstance(leaf, NonPrivateRelease)]


def _has_non_dp(events: Sequence[Event]) -> bool:
    return len(_dp_leaves(events)) != len(flatten(list(events)))


def _units(events: Sequence[Event]) -> frozenset[PrivacyUnit]:
    return frozenset(event_unit(leaf) for leaf in _dp_leaves(events))


def events_unit(events: Sequence[Event]) -> PrivacyUnit:
    """The one privacy unit of ``events`` (record-level when empty).

    A ledger states one guarantee, so it never mixes record-level and
    client-level events: a mixture raises ``PrivacyError``.
    """
    return _one_unit(_units(events))


def _one_unit(units: frozenset[PrivacyUnit]) -> PrivacyUnit:
    if len(units) > 1:
        raise PrivacyError(
            "record-level and client-level events cannot share one ledger: each states "
            "a different guarantee (keep a separate ledger per unit)"
        )
    return next(iter(units)) if units else PrivacyUnit.RECORD


class PrivacyLedger:
    """Check-then-commit budget enforcement over a ``LedgerStore``.

    Opening binds the store to (budget, delta, non-DP policy, accountant name);
    a store already bound to different settings raises ``LedgerMismatchError``:
    a site's budget never changes silently. Not thread-safe; concurrent
    processes are serialised by the store's write lock in ``append_checked``.
    """

    def __init__(
        self,
        store: LedgerStore,
        budget: Budget,
        accountant: Accountant,
        *,
        cross_check: Accountant | None = None,
        noise_source: NoiseSource = NoiseSource.OS_CSPRNG,
    ) -> None:
        configured = LedgerSettings.of(budget, accountant, noise_source)
        stored = store.initialise_or_read(configured)
        problems = stored.differences(configured)
        if problems:
            raise LedgerMismatchError(
                "the privacy ledger is bound to other settings ("
                + "; ".join(problems)
                + "); a site's budget cannot change silently: keep the stored settings "
                "or start a new site state directory"
            )
        self._store = store
        self._budget = budget
        self._accountant = accountant
        self._cross_check = cross_check
        self._noise_source = NoiseSource(noise_source)
        self._state: AccountantState | None = None
        self._state_charges = -1
        # Of the events the kept state composes: their privacy units and whether any is
        # a non-DP release (so a charge need not rescan the history).
        self._state_units: frozenset[PrivacyUnit] = frozenset()
        self._state_non_dp = False

    @property
    def noise_source(self) -> NoiseSource:
        return self._noise_source

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def budget(self) -> Budget:
        return self._budget

    @property
    def accountant(self) -> Accountant:
        return self._accountant

    @property
    def cross_check(self) -> Accountant | None:
        return self._cross_check

    def _check_request(self, round_index: int, events: Sequence[Event]) -> tuple[Event, ...]:
        if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
            raise ConfigError(f"round_index must be an int >= 0, got {round_index!r}")
        checked = check_events(events)
        if not checked:
            raise ConfigError("a charge needs at least one event")
        if _has_non_dp(checked) and not self._budget.allow_non_dp_releases:
            raise PrivacyError(
                f"round {round_index}: a non-DP release was requested but the budget does "
                "not allow non-DP releases (allow_non_dp_releases=False)"
            )
        return checked

    def _state_of(self, existing: Sequence[StoredCharge]) -> AccountantState:
        """The composed state of ``existing``: the kept one, or rebuilt once from the rows."""
        if self._state is None or self._state_charges != len(existing):
            stored = [e for charge in existing for e in charge.events]
            # charge by charge, as the charges composed it: the same floats as the kept state
            state = self._accountant.state([])
            for charge in existing:
                state = self._compose(state, charge.events)
            self._state = state
            self._state_charges = len(existing)
            self._state_units = _units(stored)
            self._state_non_dp = _has_non_dp(stored)
        return self._state

    def _compose(self, state: AccountantState, events: Sequence[Event]) -> AccountantState:
        leaves = _dp_leaves(events)
        return state.compose(leaves) if leaves else state

    def preview(self, round_index: int, events: Sequence[Event]) -> float:
        """Epsilon (at the budget's delta) after charging ``events``; nothing is written."""
        checked = self._check_request(round_index, events)
        state = self._compose(self._state_of(self._store.load()), checked)
        return state.epsilon(self._budget.delta)

    def charge(
        self,
        round_index: int,
        events: Sequence[Event],
        *,
        note: str,
        unique_round: bool = False,
        unique_round_message: str | None = None,
    ) -> ChargeReceipt:
        """Commit ``events`` if the total stays within budget, else raise and write nothing.

        With ``unique_round`` a second charge for the same ``round_index`` is
        refused (``PrivacyError``, checked inside the same write transaction).
        Returns only after the store has durably committed the charge.
        """
        checked = self._check_request(round_index, events)
        if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH:
            raise ConfigError(f"note must be a str of at most {MAX_NOTE_LENGTH} characters")

        outcome: dict[str, Any] = {}

        def decide(existing: Sequence[StoredCharge]) -> PendingCharge:
            if unique_round and any(c.round_index == round_index for c in existing):
                raise PrivacyError(
                    unique_round_message
                    or f"round {round_index} is already charged; nothing charged again"
                )
            kept = self._state_of(existing)  # also the units and non-DP flag of ``existing``
            units = self._state_units | _units(checked)
            _one_unit(units)
            candidate = self._compose(kept, checked)  # a copy: not kept yet
            after = candidate.epsilon(self._budget.delta)
            if not after <= self._budget.epsilon:
                raise BudgetExceededError(
                    f"round {round_index}: epsilon would reach {after:.6g} > budget "
                    f"{self._budget.epsilon:.6g} at delta {self._budget.delta:g}; nothing charged"
                )
            non_dp = self._state_non_dp or _has_non_dp(checked)
            outcome.update(state=candidate, units=units, non_dp=non_dp)
            return PendingCharge(
                round_index=round_index, events=checked, note=note, epsilon_after=after
            )

        stored = self._store.append_checked(decide)
        # Committed durably: only now does the ledger keep the composed state.
        self._state, self._state_charges = outcome["state"], stored.sequence
        self._state_units, self._state_non_dp = outcome["units"], bool(outcome["non_dp"])
        return ChargeReceipt(
            sequence=stored.sequence,
            round_index=stored.round_index,
            epsilon_after=stored.epsilon_after,
            remaining=self._budget.epsilon - stored.epsilon_after,
            charged_at=stored.charged_at,
            non_dp_releases=bool(outcome["non_dp"]),
        )

    def spent(self) -> float:
        """Epsilon of every stored event at the budget's delta.

        Computed from the events, never from a stored epsilon: the composed state the
        ledger keeps of the stored events (the one its charges were checked against),
        rebuilt from the file when it holds charges this ledger did not make.
        """
        return self._state_of(self._store.load()).epsilon(self._budget.delta)

    def remaining(self) -> float:
        return self._budget.epsilon - self.spent()

    def charge_count(self) -> int:
        """How many charges the store holds."""
        return len(self._store.load())

    def history(self) -> list[LedgerEntry]:
        """Every charge with its cumulative epsilon recomputed from the stored events.

        One pass: each charge's events are composed onto the previous prefix's
        state (equal to recomposing every prefix, to the discretisation).
        """
        entries: list[LedgerEntry] = []
        prefix: list[Event] = []
        state = self._accountant.state([])
        for charge in self._store.load():
            prefix.extend(charge.events)
            state = self._compose(state, charge.events)
            cumulative = state.epsilon(self._budget.delta)
            entries.append(
                LedgerEntry(
                    sequence=charge.sequence,
                    round_index=charge.round_index,
                    events=charge.events,
                    note=charge.note,
                    charged_at=charge.charged_at,
                    epsilon_cumulative=cumulative,
                    remaining=self._budget.epsilon - cumulative,
                    epsilon_at_charge=charge.epsilon_after,
                    non_dp_releases=_has_non_dp(prefix),
                )
            )
        return entries

    @property
    def unit(self) -> PrivacyUnit:
        """What this ledger's guarantee protects (from its stored events)."""
        return events_unit([e for charge in self._store.load() for e in charge.events])

    def cross_check_epsilon(self) -> float | None:
        """Total epsilon by the cross-check accountant (None when none configured or when
        it cannot compose the stored events, e.g. client-level zCDP events)."""
        if self._cross_check is None:
            return None
        stored = [e for charge in self._store.load() for e in charge.events]
        if not all(self._cross_check.supports(e) for e in _dp_leaves(stored)):
            return None
        return self._cross_check.epsilon(_dp_leaves(stored), self._budget.delta)

    def report_json(self) -> dict[str, Any]:
        """The ledger report as JSON-ready data (see ``report.py``)."""
        from fedmap_secure.privacy.report import build_report

        return build_report(self).to_json()
