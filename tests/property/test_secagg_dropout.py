"""Property: any dropout pattern gives the survivors' sum, or aborts when fewer than t remain.

Sites can stop at every stage (``DropPoint``) or be absent from the inputs
(dropped before the masked input). For the complete graph the outcome is
exactly predictable: the round succeeds iff at least t sites take part in
every stage, and then returns the exact sum (integer inputs) of the sites whose
masked input arrived; otherwise ``AbortedError`` and nothing is returned.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import AbortedError
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import DropPoint, SecureAggregator
from fedmap_secure.secagg.quantize import Quantizer

LAYOUT = VectorLayout(
    (Field(name="w", length=3, bound=100.0), Field(name="n", length=1, bound=5.0))
)
ABSENT = "absent"
PLAN = st.sampled_from([None, None, ABSENT, *DropPoint])


@cache
def keys(n: int) -> dict[str, IdentityKey]:
    rb = DeterministicRandom(b"property-keys")
    return {f"s{i}": IdentityKey.generate(rb) for i in range(n)}


def stage_sets(plan: dict[str, object]) -> list[set[str]]:
    """The sites taking part in each of the five stages under ``plan``."""
    order = list(DropPoint)

    def reaches(site: str, point: DropPoint) -> bool:
        stop = plan[site]
        if stop == ABSENT:
            stop = DropPoint.AFTER_SHARES
        return stop is None or order.index(point) < order.index(stop)  # type: ignore[arg-type]

    return [{s for s in plan if reaches(s, p)} for p in order]


@settings(max_examples=30, deadline=None)
@given(data=st.data(), n=st.integers(min_value=3, max_value=6))
def test_complete_graph_sum_of_survivors_or_abort(data: st.DataObject, n: int) -> None:
    t = data.draw(st.integers(min_value=n // 2 + 1, max_value=n), label="t")
    plan = {s: data.draw(PLAN, label=s) for s in keys(n)}
    values = {
        s: np.array(data.draw(st.lists(st.integers(-100, 100), min_size=4, max_size=4)), float)
        for s in keys(n)
    }
    values = {
        s: np.minimum(np.maximum(v, -LAYOUT.bounds()), LAYOUT.bounds()) for s, v in values.items()
    }
    inputs = {s: v for s, v in values.items() if plan[s] != ABSENT}
    dropouts = {s: p for s, p in plan.items() if isinstance(p, DropPoint)}
    aggregator = SecureAggregator(
        identities=keys(n),
        config=SecAggConfig(n=n, k=n - 1, t=t),
        random_bytes=DeterministicRandom(repr(plan).encode()),
        dropouts=dropouts,
    )
    stages = stage_sets(plan)
    senders = stages[2] & set(inputs)  # masked input needs an input
    counts = [
        len(stages[0]),
        len(stages[1]),
        len(senders),
        len(stages[3] & senders),
        len(stages[4] & senders),
    ]
    if min(counts) < t:
        with pytest.raises(AbortedError):
            aggregator.aggregate(round_index=1, layout=LAYOUT, inputs=inputs, context=b"m")
        return
    result = aggregator.aggregate(round_index=1, layout=LAYOUT, inputs=inputs, context=b"m")
    assert result.contributors == frozenset(senders)
    expected = sum((inputs[s] for s in senders), np.zeros(4))
    got = np.concatenate([result.sums["w"], result.sums["n"]])
    assert np.array_equal(got, expected)
    assert result.clipped_coordinates == 0


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    values=st.lists(
        st.lists(st.floats(-150, 150, allow_nan=False), min_size=4, max_size=4),
        min_size=4,
        max_size=4,
    ),
)
def test_float_inputs_decode_within_the_documented_bound(
    data: st.DataObject, values: list[list[float]]
) -> None:
    n = 4
    dropped = data.draw(st.sampled_from([None, "s0", "s3"]), label="dropped")
    inputs = {f"s{i}": np.array(v) for i, v in enumerate(values) if f"s{i}" != dropped}
    aggregator = SecureAggregator(
        identities=keys(n),
        config=SecAggConfig(n=n, k=n - 1, t=3),
        random_bytes=DeterministicRandom(repr(values).encode()),
    )
    result = aggregator.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"m")
    bounds = LAYOUT.bounds()
    clipped = [np.clip(v, -bounds, bounds) for v in inputs.values()]
    exact = np.sum(clipped, axis=0)
    got = np.concatenate([result.sums["w"], result.sums["n"]])
    bound = Quantizer.auto(LAYOUT, n_max=n, bits=aggregator.config.bits).error_bound(len(inputs))
    assert np.all(np.abs(got - exact) <= bound)
    assert result.clipped_coordinates == sum(
        int(np.sum(np.abs(v) > bounds)) for v in inputs.values()
    )


SPARSE = SecAggConfig(n=8, k=4, t=3, dropout_fraction=0.25)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_sparse_graph_gives_the_contributors_sum_or_aborts(data: st.DataObject) -> None:
    plan = {s: data.draw(PLAN, label=s) for s in keys(8)}
    values = {s: np.array([float(i), -2.0 * i, 1.0, 0.5]) for i, s in enumerate(keys(8))}
    inputs = {s: v for s, v in values.items() if plan[s] != ABSENT}
    dropouts = {s: p for s, p in plan.items() if isinstance(p, DropPoint)}
    aggregator = SecureAggregator(
        identities=keys(8),
        config=SPARSE,
        random_bytes=DeterministicRandom(repr(plan).encode()),
        dropouts=dropouts,
    )
    stages = stage_sets(plan)
    try:
        result = aggregator.aggregate(round_index=2, layout=LAYOUT, inputs=inputs, context=b"m")
    except AbortedError:
        assert plan != dict.fromkeys(plan)  # an honest round without dropouts never aborts
        return
    assert result.contributors <= stages[2] & set(inputs)
    assert len(result.contributors) >= SPARSE.t
    expected = sum((inputs[s] for s in result.contributors), np.zeros(4))
    got = np.concatenate([result.sums["w"], result.sums["n"]])
    assert np.array_equal(got, expected)


def test_sparse_graph_without_dropouts_succeeds() -> None:
    inputs = {s: np.array([1.0, 2.0, 3.0, 0.25]) for s in keys(8)}
    aggregator = SecureAggregator(
        identities=keys(8), config=SPARSE, random_bytes=DeterministicRandom(b"x")
    )
    result = aggregator.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"m")
    assert result.contributors == frozenset(keys(8))
    assert result.sums["w"].tolist() == [8.0, 16.0, 24.0]
