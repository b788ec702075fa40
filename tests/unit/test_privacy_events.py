"""Events: validation on construction, tagged JSON round trip, composition helpers."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fedmap_secure.errors import InvalidMechanismError
from fedmap_secure.privacy.composition import mechanism_mix
from fedmap_secure.privacy.events import (
    ComposedEvent,
    Event,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
    check_events,
    event_from_json,
    flatten,
)

SG = SubsampledGaussianEvent


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"noise_multiplier": -1.0, "sample_rate": 0.1, "steps": 1},
            "noise_multiplier must be > 0",
        ),
        ({"noise_multiplier": 0.0, "sample_rate": 0.1, "steps": 1}, "noise_multiplier must be > 0"),
        ({"noise_multiplier": math.nan, "sample_rate": 0.1, "steps": 1}, "finite"),
        ({"noise_multiplier": math.inf, "sample_rate": 0.1, "steps": 1}, "finite"),
        (
            {"noise_multiplier": 1.0, "sample_rate": 1.5, "steps": 1},
            r"sample_rate must be in \(0, 1\]",
        ),
        ({"noise_multiplier": 1.0, "sample_rate": 0.0, "steps": 1}, "sample_rate"),
        ({"noise_multiplier": 1.0, "sample_rate": -0.1, "steps": 1}, "sample_rate"),
        ({"noise_multiplier": 1.0, "sample_rate": math.nan, "steps": 1}, "finite"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 0}, "steps must be >= 1"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -3}, "steps must be >= 1"),
        ({"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 2.0}, "steps must be an int"),
        ({"noise_multiplier": True, "sample_rate": 0.1, "steps": 1}, "must be a number"),
        ({"noise_multiplier": "1", "sample_rate": 0.1, "steps": 1}, "must be a number"),
    ],
)
def test_subsampled_gaussian_refuses_invalid(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidMechanismError, match=match):
        SG(**kwargs)


def test_gaussian_refuses_invalid() -> None:
    with pytest.raises(InvalidMechanismError, match="noise_multiplier must be > 0"):
        GaussianEvent(noise_multiplier=-2.0)
    with pytest.raises(InvalidMechanismError, match="finite"):
        GaussianEvent(noise_multiplier=math.inf)
    with pytest.raises(InvalidMechanismError, match="count must be >= 1"):
        GaussianEvent(noise_multiplier=1.0, count=0)


def test_non_private_and_composed_refuse_invalid() -> None:
    with pytest.raises(InvalidMechanismError, match="non-empty"):
        NonPrivateRelease(description="  ")
    with pytest.raises(InvalidMechanismError, match="non-empty tuple"):
        ComposedEvent(events=())
    with pytest.raises(InvalidMechanismError, match="not an event"):
        ComposedEvent(events=("gaussian",))  # type: ignore[arg-type]
    deep: Event = GaussianEvent(noise_multiplier=1.0)
    for _ in range(8):
        deep = ComposedEvent(events=(deep,))
    with pytest.raises(InvalidMechanismError, match="deeper"):
        ComposedEvent(events=(deep,))


def test_ints_are_stored_as_floats_for_exact_json() -> None:
    event = SG(noise_multiplier=2, sample_rate=1, steps=3)
    assert isinstance(event.noise_multiplier, float)
    assert event.to_json() == {
        "type": "subsampled_gaussian",
        "noise_multiplier": 2.0,
        "sample_rate": 1.0,
        "steps": 3,
    }


def _samples() -> list[Event]:
    a = SG(noise_multiplier=1.1, sample_rate=0.0123456789, steps=17)
    b = GaussianEvent(noise_multiplier=7.25, count=2)
    c = NonPrivateRelease(description="test-set accuracy counts, in the clear")
    return [a, b, c, ComposedEvent(events=(a, ComposedEvent(events=(b, c))))]


@pytest.mark.parametrize("event", _samples())
def test_json_round_trip_is_exact(event: Event) -> None:
    assert event_from_json(event.to_json()) == event
    assert event.describe()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"type": "laplace", "scale": 1.0}, "unknown event type"),
        ({"noise_multiplier": 1.0}, "unknown event type"),
        ({"type": "gaussian", "noise_multiplier": 1.0}, "expected fields"),
        ({"type": "gaussian", "noise_multiplier": 1.0, "count": 1, "x": 0}, "expected fields"),
        ({"type": "gaussian", "noise_multiplier": -1.0, "count": 1}, "must be > 0"),
        ({"type": "composed", "events": {}}, "must be a list"),
        ([1, 2], "JSON object"),
    ],
)
def test_from_json_refuses_bad_data(data: object, match: str) -> None:
    with pytest.raises(InvalidMechanismError, match=match):
        event_from_json(data)


def test_flatten_and_mechanism_mix_group_identical_mechanisms() -> None:
    a = SG(noise_multiplier=1.0, sample_rate=0.1, steps=10)
    full = SG(noise_multiplier=3.0, sample_rate=1.0, steps=2)
    g = GaussianEvent(noise_multiplier=3.0, count=1)
    events: list[Event] = [a, ComposedEvent(events=(a, g)), full]
    assert flatten(events) == (a, a, g, full)
    mix = mechanism_mix(events)
    assert mix.subsampled == ((1.0, 0.1, 20), (3.0, 1.0, 2))
    # sample rate 1 stays a DP-SGD step: under replace-one its sensitivity is 2C, not S
    assert mix.gaussian == ((3.0, 1),)
    assert mix.non_private == ()


def test_check_events_refuses_non_events() -> None:
    with pytest.raises(InvalidMechanismError):
        check_events("gaussian")
    with pytest.raises(InvalidMechanismError, match="not a privacy event"):
        check_events([1.0])
    assert check_events([]) == ()
