"""The public randomized Hadamard rotation: exact inverse, isometry, flattening, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmap_secure.client_dp.rotation import RandomizedHadamard, fwht, padded_dimension
from fedmap_secure.crypto.labels import LABEL_CLIENT_DP_ROTATION
from fedmap_secure.crypto.prg import expand_mask
from fedmap_secure.errors import ConfigError

SEED = bytes(range(32))
OTHER_SEED = bytes(range(1, 33))


def _hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


@pytest.mark.parametrize(("dim", "padded"), [(1, 1), (2, 2), (3, 4), (1000, 1024), (1024, 1024)])
def test_padded_dimension_is_next_power_of_two(dim: int, padded: int) -> None:
    assert padded_dimension(dim) == padded
    assert RandomizedHadamard(dim, SEED).padded_dim == padded


def test_fwht_matches_the_hadamard_matrix() -> None:
    v = np.random.default_rng(1).normal(size=32)
    assert np.allclose(fwht(v), _hadamard(32) @ v, rtol=0, atol=1e-12)
    assert np.allclose(fwht(fwht(v)), 32 * v, rtol=0, atol=1e-11)


def test_forward_is_the_matrix_h_d_over_sqrt_d() -> None:
    rot = RandomizedHadamard(13, SEED)
    x = np.random.default_rng(2).normal(size=13)
    u = _hadamard(16) @ np.diag(rot.signs) / 4.0
    assert np.allclose(rot.forward(x), u @ np.concatenate([x, np.zeros(3)]), atol=1e-12)


def test_signs_come_from_the_labelled_prg() -> None:
    rot = RandomizedHadamard(1000, SEED)
    bits = expand_mask(
        SEED, label=LABEL_CLIENT_DP_ROTATION, context=(1000).to_bytes(8, "big"), length=1024, bits=1
    )
    assert np.array_equal(rot.signs, np.where(bits == 1, -1.0, 1.0))
    assert 400 < int(np.sum(rot.signs < 0)) < 624  # both signs occur


@pytest.mark.parametrize("dim", [1, 7, 300, 1000, 4096])
def test_inverse_undoes_forward_and_norm_is_preserved(dim: int) -> None:
    rot = RandomizedHadamard(dim, SEED)
    x = np.random.default_rng(dim).normal(size=dim) * 3.0
    y = rot.forward(x)
    assert y.shape == (rot.padded_dim,)
    assert np.max(np.abs(rot.inverse(y) - x)) < 1e-12
    assert math.isclose(float(np.linalg.norm(y)), float(np.linalg.norm(x)), rel_tol=1e-12)


def test_same_seed_same_rotation_other_seed_or_dim_differs() -> None:
    a = RandomizedHadamard(1000, SEED)
    assert np.array_equal(a.signs, RandomizedHadamard(1000, SEED).signs)
    assert a == RandomizedHadamard(1000, SEED)
    assert not np.array_equal(a.signs, RandomizedHadamard(1000, OTHER_SEED).signs)
    # the dimension is bound into the PRG context: same padded length, other signs
    assert not np.array_equal(a.signs, RandomizedHadamard(999, SEED).signs)


def test_rotation_flattens_a_spike() -> None:
    dim = 4096
    spike = np.zeros(dim)
    spike[17] = 10.0
    y = RandomizedHadamard(dim, SEED).forward(spike)
    # a single spike maps to +-norm/sqrt(d) in every coordinate
    assert np.allclose(np.abs(y), 10.0 / math.sqrt(dim), rtol=1e-12)
    two = np.zeros(dim)
    two[[3, 900]] = [6.0, -8.0]
    y2 = RandomizedHadamard(dim, SEED).forward(two)
    assert float(np.max(np.abs(y2))) <= 14.0 / math.sqrt(dim) + 1e-12


@pytest.mark.parametrize("dim", [0, -3, True, 2.0])
def test_invalid_dimension_raises(dim: object) -> None:
    with pytest.raises(ConfigError, match="dimension"):
        RandomizedHadamard(dim, SEED)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [b"", bytes(31), bytes(33), "x" * 32])
def test_invalid_seed_raises(seed: object) -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        RandomizedHadamard(8, seed)  # type: ignore[arg-type]


def test_invalid_vectors_raise() -> None:
    rot = RandomizedHadamard(5, SEED)
    with pytest.raises(ConfigError, match=r"shape \(5,\)"):
        rot.forward(np.zeros(8))
    with pytest.raises(ConfigError, match=r"shape \(8,\)"):
        rot.inverse(np.zeros(5))
    with pytest.raises(ConfigError, match="NaN"):
        rot.forward(np.array([0.0, 1.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="NaN"):
        rot.inverse(np.full(8, np.inf))
    with pytest.raises(ConfigError, match="not a vector"):
        rot.forward(["a", "b", "c", "d", "e"])


def test_repr_names_the_dimension_not_the_signs() -> None:
    text = repr(RandomizedHadamard(5, SEED))
    assert "dim=5" in text
    assert "signs" not in text
