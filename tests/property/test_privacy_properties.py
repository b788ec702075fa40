"""Properties of events, accountants and the ledger (hypothesis)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmap_secure.errors import ConfigError, InvalidMechanismError
from fedmap_secure.privacy.accountant_base import Accountant
from fedmap_secure.privacy.accountants import (
    AccountantName,
    OpacusRdpAccountant,
    create_accountant,
)
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import (
    ComposedEvent,
    Event,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
    event_from_json,
)
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.privacy.ledger_store import open_site_ledger

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Integer orders keep Opacus' RDP closed-form and fast (~7 ms per mechanism).
RDP = OpacusRdpAccountant(orders=[float(a) for a in range(2, 64)])
PLD = create_accountant(AccountantName.DP_ACCOUNTING_PLD)

noise = st.floats(min_value=0.6, max_value=20.0)
subsampled = st.builds(
    SubsampledGaussianEvent,
    noise_multiplier=noise,
    sample_rate=st.floats(min_value=1e-3, max_value=1.0),
    steps=st.integers(min_value=1, max_value=200),
)
gaussian = st.builds(GaussianEvent, noise_multiplier=noise, count=st.integers(1, 5))
dp_leaf = st.one_of(subsampled, gaussian)
dp_event: st.SearchStrategy[Event] = st.recursive(
    dp_leaf,
    lambda inner: st.builds(
        ComposedEvent, events=st.lists(inner, min_size=1, max_size=3).map(tuple)
    ),
    max_leaves=4,
)
any_event: st.SearchStrategy[Event] = st.recursive(
    st.one_of(
        dp_leaf, st.builds(NonPrivateRelease, description=st.text(min_size=1).filter(str.strip))
    ),
    lambda inner: st.builds(
        ComposedEvent, events=st.lists(inner, min_size=1, max_size=3).map(tuple)
    ),
    max_leaves=5,
)
rounds = st.lists(st.lists(dp_event, min_size=1, max_size=2), min_size=1, max_size=4)
small_rounds = st.lists(st.lists(dp_leaf, min_size=1, max_size=2), min_size=1, max_size=3)


@FAST
@given(any_event)
def test_json_round_trip(event: Event) -> None:
    assert event_from_json(event.to_json()) == event


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    st.integers(-5, 5),
)
def test_invalid_parameters_are_refused(sigma: float, rate: float, steps: int) -> None:
    valid = (
        math.isfinite(sigma) and sigma > 0 and math.isfinite(rate) and 0 < rate <= 1 and steps >= 1
    )
    try:
        event = SubsampledGaussianEvent(noise_multiplier=sigma, sample_rate=rate, steps=steps)
    except InvalidMechanismError:
        assert not valid
    else:
        assert valid
        assert event.noise_multiplier == sigma
        assert event.sample_rate == rate


def _check_monotone(plan: list[list[Event]], accountant: Accountant) -> None:
    ledger = PrivacyLedger(MemoryLedgerStore(), Budget(epsilon=1e9, delta=1e-5), accountant)
    previous = 0.0
    for index, events in enumerate(plan):
        receipt = ledger.charge(index, events, note="")
        assert receipt.epsilon_after >= previous
        previous = receipt.epsilon_after
    cumulative = [entry.epsilon_cumulative for entry in ledger.history()]
    assert cumulative == sorted(cumulative)


@FAST
@given(rounds)
def test_epsilon_never_decreases_as_events_are_charged_rdp(plan: list[list[Event]]) -> None:
    _check_monotone(plan, RDP)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_rounds)
def test_epsilon_never_decreases_as_events_are_charged_pld(plan: list[list[Event]]) -> None:
    _check_monotone(plan, PLD)


@FAST
@given(rounds, st.floats(min_value=0.5, max_value=30.0))
def test_reopened_ledger_reports_what_was_charged(plan: list[list[Event]], eps: float) -> None:
    budget = Budget(epsilon=eps, delta=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        receipts = []
        with open_site_ledger(Path(tmp), budget=budget, accountant=RDP) as ledger:
            for index, events in enumerate(plan):
                if ledger.preview(index, events) <= eps:
                    receipts.append(ledger.charge(index, events, note=f"r{index}"))
        with open_site_ledger(Path(tmp), budget=budget, accountant=RDP) as reopened:
            history = reopened.history()
            assert [e.epsilon_cumulative for e in history] == [r.epsilon_after for r in receipts]
            assert reopened.spent() == (receipts[-1].epsilon_after if receipts else 0.0)
            assert reopened.spent() <= eps


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
    st.integers(-3, 3),
)
def test_invalid_gaussian_parameters_are_refused(sigma: float, count: int) -> None:
    valid = math.isfinite(sigma) and sigma > 0 and count >= 1
    try:
        GaussianEvent(noise_multiplier=sigma, count=count)
    except InvalidMechanismError:
        assert not valid
    else:
        assert valid


@settings(max_examples=200, deadline=None)
@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_invalid_budgets_are_refused(epsilon: float, delta: float) -> None:
    valid = math.isfinite(epsilon) and epsilon > 0 and 0 < delta < 1
    try:
        Budget(epsilon=epsilon, delta=delta)
    except ConfigError:
        assert not valid
    else:
        assert valid
