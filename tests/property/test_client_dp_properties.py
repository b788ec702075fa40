"""Properties of the distributed-DP encoding: exact ring arithmetic and bounded decoding error."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.client_dp.encoding import (
    DistributedDpEncoder,
    NoiseKind,
    RingEncoding,
    clip_fields,
    from_ring,
    to_ring,
)
from fedmap_secure.training.secure_noise import CsprngStream

TINY_STD = 1e-3
"""A discrete Gaussian this narrow is exactly 0: exp(-(1 - 1e-6)^2 / 2e-6) underflows."""


@st.composite
def _layouts(draw: st.DrawFn) -> VectorLayout:
    count = draw(st.integers(min_value=1, max_value=3))
    fields = tuple(
        Field(
            name=f"f{i}",
            length=draw(st.integers(min_value=1, max_value=40)),
            bound=draw(st.floats(min_value=0.01, max_value=10.0)),
        )
        for i in range(count)
    )
    return VectorLayout(fields)


@settings(max_examples=60, deadline=None)
@given(
    layout=_layouts(),
    n_sites=st.integers(min_value=1, max_value=6),
    scale=st.floats(min_value=1e-4, max_value=0.5),
    bits=st.integers(min_value=24, max_value=64),
    beta=st.sampled_from([0.0, 1e-3, math.exp(-0.5)]),
    data=st.data(),
)
def test_decoded_sum_is_within_rounding_error_of_the_clipped_sum(
    layout: VectorLayout,
    n_sites: int,
    scale: float,
    bits: int,
    beta: float,
    data: st.DataObject,
) -> None:
    encoding = RingEncoding(
        mechanism=NoiseKind.DISCRETE_GAUSSIAN,
        bits=bits,
        scale=scale,
        local_noise_std=TINY_STD,
        beta=beta,
        rotation_seed=data.draw(st.binary(min_size=32, max_size=32)),
    )
    encoder = DistributedDpEncoder(layout, encoding)
    element = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)
    vectors = [
        np.array(data.draw(st.lists(element, min_size=layout.size, max_size=layout.size)))
        for _ in range(n_sites)
    ]
    total = np.zeros(encoder.length, dtype=np.uint64)
    truth = np.zeros(layout.size)
    for i, vector in enumerate(vectors):
        stream = CsprngStream.seeded(i, label="property").random_bytes
        total += encoder.encode(vector, random_bytes=stream).ring
        truth += clip_fields(layout, vector)[0]
    if bits < 64:
        total &= np.uint64((1 << bits) - 1)
    error = float(np.linalg.norm(encoder.decode(total) - truth))
    # each site's rounding moves each of the padded_dim rotated coordinates by < 1 level
    assert error <= n_sites * scale * math.sqrt(encoder.length) + 1e-9


@settings(max_examples=200, deadline=None)
@given(
    bits=st.integers(min_value=2, max_value=64),
    data=st.data(),
)
def test_ring_sum_is_the_integer_sum_when_it_fits(bits: int, data: st.DataObject) -> None:
    half = 1 << (bits - 1)
    terms = data.draw(
        st.lists(
            st.lists(st.integers(-half, half - 1), min_size=4, max_size=4), min_size=1, max_size=6
        )
    )
    exact = [sum(column) for column in zip(*terms, strict=True)]
    total = np.zeros(4, dtype=np.uint64)
    for term in terms:
        ring = to_ring(np.array(term, dtype=np.int64), bits)
        assert int(ring.max()) < 1 << bits
        total += ring
    if bits < 64:
        total &= np.uint64((1 << bits) - 1)
    centred = [int(v) for v in from_ring(total, bits)]
    assert centred == [((s + half) % (1 << bits)) - half for s in exact]
