"""Free plausibility checks on the decoded sum: impossible sums are rejected, typed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.errors import ImplausibleAggregateError
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.round_encoder import decode_result

LAYOUT = VectorLayout(
    (Field(name="theta", length=3, bound=4.0), Field(name="w", length=1, bound=1.0))
)
N_MAX = 5
BITS = 32


def _ring_sum(encoded: list[np.ndarray]) -> np.ndarray:
    total = np.zeros_like(encoded[0])
    for e in encoded:
        total = (total + e) & np.uint64((1 << BITS) - 1)
    return total


def _encode(q: Quantizer, vector: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return q.encode(vector, random_bytes=lambda k: rng.bytes(k))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=4),
        min_size=1,
        max_size=N_MAX,
    )
)
def test_honest_inputs_always_pass(vectors: list[list[float]]) -> None:
    q = Quantizer.auto(LAYOUT, n_max=N_MAX, bits=BITS)
    total = _ring_sum([_encode(q, np.array(v)) for v in vectors])
    sites = frozenset(f"s{i}" for i in range(len(vectors)))
    result = decode_result(q, LAYOUT, total, sites, 0)
    assert result.contributors == sites


def test_a_sum_beyond_survivors_times_the_bound_is_rejected() -> None:
    """Two sites, bound 4: a sum of 26 is impossible (a corrupt site skipped its clipping)."""
    q = Quantizer.auto(LAYOUT, n_max=N_MAX, bits=BITS)
    honest = _encode(q, np.array([1.0, 2.0, 3.0, 0.5]))
    scale = 2.0 ** q.fractional_bits[0]
    corrupt = _encode(q, np.zeros(4))
    corrupt[0] = np.uint64(int(25 * scale))
    total = _ring_sum([honest, corrupt])
    with pytest.raises(ImplausibleAggregateError, match=r"round 3: .*theta\[0\].*2 x 4"):
        decode_result(q, LAYOUT, total, frozenset({"a", "b"}), 3)


@pytest.mark.parametrize("count", [-1, 2 * LAYOUT.size + 1])
def test_an_impossible_clipped_count_is_rejected(count: int) -> None:
    q = Quantizer.auto(LAYOUT, n_max=N_MAX, bits=BITS)
    total = _ring_sum([_encode(q, np.zeros(4)), _encode(q, np.zeros(4))])
    total[-1] = np.uint64(count % (1 << BITS))
    with pytest.raises(ImplausibleAggregateError, match="clipped-coordinate count"):
        decode_result(q, LAYOUT, total, frozenset({"a", "b"}), 0)
