"""Distributed-DP ring encoding: noisy sums decode to the clipped sum plus the planned noise."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.client_dp.encoding import (
    DistributedDpEncoder,
    EncodedContribution,
    NoiseKind,
    RingEncoding,
    clip_fields,
    conditional_round,
    from_ring,
    rounded_l2_bound,
    to_ring,
)
from fedmap_secure.errors import ConfigError, PrivacyError
from fedmap_secure.training.secure_noise import CsprngStream

SEED = bytes(range(32))
LAYOUT = VectorLayout(
    (Field(name="weights", length=300, bound=1.0), Field(name="bias", length=700, bound=2.0))
)


def _stream(seed: int, label: str = "site") -> Callable[[int], bytes]:
    return CsprngStream.seeded(seed, label=label).random_bytes


def _encoding(**overrides: object) -> RingEncoding:
    params: dict[str, object] = {
        "mechanism": NoiseKind.DISCRETE_GAUSSIAN,
        "bits": 32,
        "scale": 1e-3,
        "local_noise_std": 50.0,
        "beta": math.exp(-0.5),
        "rotation_seed": SEED,
    }
    params.update(overrides)
    return RingEncoding(**params)  # type: ignore[arg-type]


def _ring_sum(parts: list[EncodedContribution], bits: int) -> npt.NDArray[np.uint64]:
    total = np.zeros(parts[0].ring.shape[0], dtype=np.uint64)
    for part in parts:
        total += part.ring  # uint64 wraps mod 2^64; 2^bits divides 2^64
    return total & np.uint64((1 << bits) - 1) if bits < 64 else total


# --- the statistical test of the issue ---------------------------------------------------


@pytest.mark.parametrize("mechanism", list(NoiseKind))
def test_sum_of_encodings_decodes_to_clipped_sum_plus_planned_noise(mechanism: NoiseKind) -> None:
    n_sites, rounds, std, scale = 5, 3, 50.0, 1e-3
    encoder = DistributedDpEncoder(
        LAYOUT, _encoding(mechanism=mechanism, local_noise_std=std, scale=scale)
    )
    inputs = np.random.default_rng(11)
    residuals = []
    for r in range(rounds):
        vectors = [inputs.normal(size=LAYOUT.size) * 0.1 for _ in range(n_sites)]
        truth = sum(clip_fields(LAYOUT, v)[0] for v in vectors)
        parts = [
            encoder.encode(v, random_bytes=_stream(100 * r + i, mechanism.value))
            for i, v in enumerate(vectors)
        ]
        residuals.append(encoder.decode(_ring_sum(parts, 32)) - truth)
    residual = np.concatenate(residuals)
    noise_var = n_sites * std**2 * scale**2
    rounding_var = n_sites / 4 * scale**2
    assert abs(float(residual.mean())) < 5 * math.sqrt((noise_var + rounding_var) / residual.size)
    assert float(residual.var()) > 0.85 * noise_var
    assert float(residual.var()) < 1.15 * (noise_var + rounding_var)


def test_without_sum_a_single_encoding_carries_one_nth_of_the_noise() -> None:
    encoder = DistributedDpEncoder(LAYOUT, _encoding(local_noise_std=50.0))
    x = np.zeros(LAYOUT.size)
    alone = encoder.decode(encoder.encode(x, random_bytes=_stream(1)).ring)
    assert float(alone.var()) == pytest.approx(50.0**2 * 1e-6, rel=0.15)


# --- clipping, rounding, ring -----------------------------------------------------------


def test_oversized_field_is_scaled_to_its_bound_and_named() -> None:
    x = np.concatenate([np.full(300, 1.0), np.full(700, 0.01)])  # norms sqrt(300) and 0.26
    clipped, names = clip_fields(LAYOUT, x)
    assert names == ("weights",)
    assert float(np.linalg.norm(clipped[:300])) == pytest.approx(1.0, rel=1e-12)
    assert np.allclose(clipped[:300], 1.0 / math.sqrt(300))
    assert np.array_equal(clipped[300:], x[300:])
    assert np.array_equal(x[:300], np.full(300, 1.0))  # input untouched
    out = DistributedDpEncoder(LAYOUT, _encoding()).encode(x, random_bytes=_stream(2))
    assert out.clipped_fields == ("weights",)


def test_clipping_does_not_overflow_on_huge_values() -> None:
    x = np.concatenate([np.full(300, 1e200), np.zeros(700)])
    clipped, names = clip_fields(LAYOUT, x)
    assert names == ("weights",)
    assert np.allclose(clipped[:300], 1.0 / math.sqrt(300), rtol=1e-12)


def test_encoder_parameters_are_read_only() -> None:
    encoder = DistributedDpEncoder(LAYOUT, _encoding())
    with pytest.raises(AttributeError):
        encoder.rounded_norm_bound = 1e9  # type: ignore[misc]


def test_encoder_derives_clip_and_rounded_bound_from_layout() -> None:
    encoder = DistributedDpEncoder(LAYOUT, _encoding(scale=1e-3, beta=0.0))
    assert encoder.length == 1024
    assert encoder.l2_clip == pytest.approx(math.sqrt(5.0))
    assert encoder.rounded_norm_bound == pytest.approx(math.sqrt(5.0) * 1e3 + 32.0)


def test_rounded_l2_bound_formula() -> None:
    c, d = 100.0, 64
    assert rounded_l2_bound(c, d, 0.0) == c + 8.0
    beta = 1e-6
    inner = c * c + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + 4.0)
    assert rounded_l2_bound(c, d, beta) == pytest.approx(math.sqrt(inner))
    assert rounded_l2_bound(0.0, 4, 1e-300) == 2.0  # tiny beta: capped by c + sqrt(d)
    for bad in [(-1.0, 4, 0.1), (math.nan, 4, 0.1), (1.0, 0, 0.1), (1.0, 4, 1.0), (1.0, 4, -0.1)]:
        with pytest.raises(ConfigError):
            rounded_l2_bound(*bad)


def test_rounded_vector_norm_is_within_the_bound() -> None:
    encoder = DistributedDpEncoder(LAYOUT, _encoding(beta=math.exp(-0.5)))
    x = np.concatenate([np.full(300, 5.0), np.full(700, -5.0)])  # both fields get clipped
    _, names = clip_fields(LAYOUT, x)
    scaled = encoder.rotation.forward(clip_fields(LAYOUT, x)[0]) / encoder.encoding.scale
    for seed in range(20):
        q, attempts = conditional_round(scaled, encoder.rounded_norm_bound, _stream(seed))
        assert float(np.linalg.norm(q)) <= encoder.rounded_norm_bound
        assert np.all(np.abs(q - scaled) < 1.0)
        assert attempts >= 1
    assert names == ("weights", "bias")


def test_conditional_rounding_retries_and_is_unbiased() -> None:
    values = np.full(64, 0.5)
    attempts_seen = []
    ones = []
    for seed in range(30):
        q, attempts = conditional_round(values, math.sqrt(30.0), _stream(seed, "round"))
        assert int(np.sum(q * q)) <= 30
        attempts_seen.append(attempts)
        ones.append(float(q.mean()))
    assert max(attempts_seen) > 1  # P(Bin(64, 1/2) <= 30) ~ 0.36: rejections happen
    unbiased = [conditional_round(values, 100.0, _stream(s, "u"))[0].mean() for s in range(30)]
    assert float(np.mean(unbiased)) == pytest.approx(0.5, abs=0.03)


def test_conditional_rounding_gives_up_with_privacy_error() -> None:
    with pytest.raises(PrivacyError, match="1000 attempts"):
        conditional_round(np.full(64, 0.5), 0.5, _stream(1))


@pytest.mark.parametrize("bits", [2, 20, 63, 64])
def test_ring_round_trip_wraps_negatives_to_the_top(bits: int) -> None:
    half = 1 << (bits - 1)
    values = np.array([0, 1, -1, half - 1, -half], dtype=np.int64)
    ring = to_ring(values, bits)
    assert ring.dtype == np.uint64
    assert int(ring[2]) == (1 << bits) - 1
    assert int(ring[4]) == half
    assert np.array_equal(from_ring(ring, bits), values)


@pytest.mark.parametrize("mechanism", list(NoiseKind))
def test_partial_sums_that_wrap_the_ring_still_decode(mechanism: NoiseKind) -> None:
    bits, scale, n_sites = 20, 1e-4, 5
    layout = VectorLayout((Field(name="w", length=100, bound=50.0),))
    encoder = DistributedDpEncoder(
        layout, _encoding(mechanism=mechanism, bits=bits, scale=scale, local_noise_std=0.5)
    )
    x = -np.linspace(1.0, 4.0, 100)  # ||x|| ~ 26 < 50: no clipping; rotated coords ~ -2.6
    parts = [encoder.encode(x, random_bytes=_stream(i, "wrap")) for i in range(n_sites)]
    assert all(p.clipped_fields == () for p in parts)
    assert any(int(p.ring.max()) > (1 << (bits - 1)) for p in parts)  # negatives sit at the top
    decoded = encoder.decode(_ring_sum(parts, bits))
    # per site: rounding < 1 level and noise ~ 0.5 level per coordinate, in L2 over 128 coords
    assert float(np.linalg.norm(decoded - n_sites * x)) < n_sites * scale * 4 * math.sqrt(128)
    plain = encoder.decode(to_ring(np.zeros(128, dtype=np.int64), bits))
    assert np.array_equal(plain, np.zeros(100))


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mechanism", "ddg"),
        ("bits", 1),
        ("bits", 65),
        ("bits", True),
        ("bits", 32.0),
        ("scale", 0.0),
        ("scale", -1.0),
        ("scale", math.nan),
        ("scale", math.inf),
        ("local_noise_std", 0.0),
        ("local_noise_std", math.inf),
        ("local_noise_std", 2.0**30),
        ("beta", 1.0),
        ("beta", -0.01),
        ("beta", math.nan),
        ("rotation_seed", bytes(31)),
        ("rotation_seed", "x" * 32),
    ],
)
def test_invalid_ring_encoding_raises(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        _encoding(**{field: value})


def test_skellam_noise_std_is_capped_at_2_16_levels() -> None:
    assert _encoding(mechanism=NoiseKind.SKELLAM, local_noise_std=2.0**16).local_noise_std > 0
    with pytest.raises(ConfigError, match="local_noise_std"):
        _encoding(mechanism=NoiseKind.SKELLAM, local_noise_std=2.0**17)


def test_ring_encoding_repr_omits_the_seed() -> None:
    assert "rotation_seed" not in repr(_encoding())


def test_scale_too_fine_for_the_clip_is_rejected() -> None:
    with pytest.raises(ConfigError, match="too small"):
        DistributedDpEncoder(LAYOUT, _encoding(scale=1e-20))


def test_encode_and_decode_validate_their_inputs() -> None:
    encoder = DistributedDpEncoder(LAYOUT, _encoding(bits=20))
    with pytest.raises(ConfigError, match="shape"):
        encoder.encode(np.zeros(999), random_bytes=_stream(1))
    bad = np.zeros(LAYOUT.size)
    bad[5] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        encoder.encode(bad, random_bytes=_stream(1))
    with pytest.raises(ConfigError, match="numpy"):
        encoder.encode([0.0] * LAYOUT.size, random_bytes=_stream(1))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="uint64"):
        encoder.decode(np.zeros(1024, dtype=np.int64))
    with pytest.raises(ConfigError, match="shape"):
        encoder.decode(np.zeros(1000, dtype=np.uint64))
    with pytest.raises(ConfigError, match="outside"):
        encoder.decode(np.full(1024, 1 << 20, dtype=np.uint64))


def test_encoded_contribution_validates() -> None:
    ring = np.zeros(4, dtype=np.uint64)
    with pytest.raises(ConfigError, match="uint64"):
        EncodedContribution(ring=np.zeros(4), clipped_fields=(), rounding_attempts=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rounding_attempts"):
        EncodedContribution(ring=ring, clipped_fields=(), rounding_attempts=0)


def test_encoding_is_deterministic_given_the_stream() -> None:
    encoder = DistributedDpEncoder(LAYOUT, _encoding(mechanism=NoiseKind.SKELLAM))
    x = np.random.default_rng(3).normal(size=LAYOUT.size)
    a = encoder.encode(x, random_bytes=_stream(4))
    b = encoder.encode(x, random_bytes=_stream(4))
    c = encoder.encode(x, random_bytes=_stream(5))
    assert np.array_equal(a.ring, b.ring)
    assert not np.array_equal(a.ring, c.ring)
    assert a.ring.shape == (1024,)
    assert int(a.ring.max()) < 1 << 32
