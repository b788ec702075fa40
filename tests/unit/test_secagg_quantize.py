from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.masking import modulus_mask
from fedmap_secure.secagg.quantize import Quantizer, encoded_length

LAYOUT = VectorLayout(
    (Field(name="model", length=5, bound=2.0), Field(name="weight", length=1, bound=1000.0))
)


def _sum(q: Quantizer, vectors: list[np.ndarray], seed: bytes) -> np.ndarray:
    rb = DeterministicRandom(seed)
    total = np.zeros(encoded_length(LAYOUT), dtype=np.uint64)
    for v in vectors:
        total += q.encode(v, random_bytes=rb)
    return np.bitwise_and(total, modulus_mask(q.bits))


@pytest.mark.parametrize("bits", [24, 32, 48, 64])
def test_sum_decodes_within_the_documented_bound(bits: int) -> None:
    rng = np.random.default_rng(1)
    n = 7
    q = Quantizer.auto(LAYOUT, n_max=n, bits=bits)
    vectors = [rng.uniform(-1, 1, 6) * LAYOUT.bounds() for _ in range(n)]
    decoded, clipped = q.decode(_sum(q, vectors, b"a"))
    exact = np.sum(vectors, axis=0)
    assert clipped == 0
    assert np.all(np.abs(decoded - exact) <= q.error_bound(n))
    assert np.all(q.error_bound(n) > 0)


def test_extreme_values_at_the_bound_do_not_wrap() -> None:
    n = 5
    q = Quantizer.auto(LAYOUT, n_max=n, bits=32)
    for sign in (1.0, -1.0):
        vectors = [sign * LAYOUT.bounds() for _ in range(n)]
        decoded, _ = q.decode(_sum(q, vectors, b"b"))
        assert np.allclose(decoded, sign * n * LAYOUT.bounds(), atol=0, rtol=0)


def test_clipping_is_counted_inside_the_sum() -> None:
    q = Quantizer.auto(LAYOUT, n_max=3, bits=64)
    a = np.array([3.0, -3.0, 0.0, 0.0, 0.0, 5.0])  # two coordinates out of range
    b = np.array([0.0, 0.0, 0.0, 0.0, 2.5, 2000.0])  # two more
    decoded, clipped = q.decode(_sum(q, [a, b], b"c"))
    assert clipped == 4
    assert decoded[0] == pytest.approx(2.0)
    assert decoded[5] == pytest.approx(1005.0)


def test_stochastic_rounding_is_unbiased() -> None:
    layout = VectorLayout((Field(name="x", length=20000, bound=1.0),))
    q = Quantizer(layout=layout, n_max=1, bits=32, fractional_bits=(2,))
    value = np.full(20000, 0.1)  # 0.1 * 4 = 0.4 levels: rounds to 0 or 1 level
    decoded, _ = q.decode(q.encode(value, random_bytes=DeterministicRandom(b"d")))
    assert set(np.unique(decoded)) == {0.0, 0.25}
    assert abs(decoded.mean() - 0.1) < 0.005  # 4 standard errors


def test_setup_refuses_a_range_that_could_wrap() -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        Quantizer(layout=LAYOUT, n_max=100, bits=16, fractional_bits=(10, 0))
    with pytest.raises(ConfigError, match="too large"):
        Quantizer.auto(LAYOUT, n_max=100, bits=16)
    with pytest.raises(ConfigError, match="2\\^52"):
        Quantizer(layout=LAYOUT, n_max=1, bits=64, fractional_bits=(60, 0))
    with pytest.raises(ConfigError, match="one entry per"):
        Quantizer(layout=LAYOUT, n_max=1, bits=64, fractional_bits=(1,))


def test_encode_refuses_wrong_shape_or_nan() -> None:
    q = Quantizer.auto(LAYOUT, n_max=3, bits=64)
    with pytest.raises(ConfigError):
        q.encode(np.zeros(5))
    with pytest.raises(ConfigError):
        q.encode(np.array([np.nan, 0, 0, 0, 0, 0]))
    with pytest.raises(ConfigError):
        q.decode(np.zeros(3, dtype=np.uint64))


@pytest.mark.parametrize("bits", [16, 33, 63, 64])
def test_negative_sums_decode_at_every_ring_width(bits: int) -> None:
    layout = VectorLayout((Field(name="x", length=3, bound=1.0),))
    q = Quantizer.auto(layout, n_max=2, bits=bits)
    enc = [q.encode(np.array([-1.0, 0.5, -0.25])), q.encode(np.array([-1.0, -0.5, 0.0]))]
    mask = (1 << bits) - 1
    total = np.array([(int(a) + int(b)) & mask for a, b in zip(*enc, strict=True)], dtype=np.uint64)
    values, clipped = q.decode(total)
    np.testing.assert_allclose(values, [-2.0, 0.0, -0.25], atol=2 * 2.0 ** -q.fractional_bits[0])
    assert clipped == 0
