"""Mask sums in the SecAgg word type: apply_masks and RunningSum against whole expansions."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.crypto.prg import MaskTerm
from fedmap_secure.secagg.masking import (
    RunningSum,
    Vector,
    apply_masks,
    modulus_mask,
    pairwise_mask,
    pairwise_mask_term,
    self_mask,
    self_mask_term,
)

SESSION = bytes(range(32))
SEEDS = [bytes([i]) * 32 for i in range(1, 4)]
LENGTH = 1000


def _terms() -> list[MaskTerm]:
    return [
        self_mask_term(SEEDS[0], session=SESSION, site="a"),
        pairwise_mask_term(SEEDS[1], session=SESSION, sign=1),
        pairwise_mask_term(SEEDS[2], session=SESSION, sign=-1),
    ]


def _expected(start: Vector, bits: int) -> Vector:
    whole = (
        self_mask(SEEDS[0], session=SESSION, site="a", length=LENGTH, bits=bits)
        + pairwise_mask(SEEDS[1], session=SESSION, length=LENGTH, bits=bits)
        - pairwise_mask(SEEDS[2], session=SESSION, length=LENGTH, bits=bits)
    )
    out: Vector = (start + whole) & modulus_mask(bits)
    return out


@pytest.mark.parametrize("bits", [16, 32, 33, 64])
def test_apply_masks_is_the_sum_of_whole_masks_and_leaves_the_input(bits: int) -> None:
    x = np.arange(LENGTH, dtype=np.uint64) & modulus_mask(bits)
    before = x.copy()
    y = apply_masks(x, _terms(), bits=bits)
    assert y.dtype == np.uint64
    assert np.array_equal(y, _expected(x, bits))
    assert np.array_equal(x, before)
    assert int(y.max()) <= int(modulus_mask(bits))


@pytest.mark.parametrize("bits", [16, 32, 48, 64])
def test_running_sum_removes_masks_exactly(bits: int) -> None:
    inputs = [np.full(LENGTH, v, dtype=np.uint64) & modulus_mask(bits) for v in (5, 2**40 + 7)]
    masked = apply_masks(inputs[0], _terms(), bits=bits)
    total = RunningSum(LENGTH, bits)
    total.add(masked)
    total.add(inputs[1])
    total.add_masks(_negated(_terms()))
    assert np.array_equal(total.value(), (inputs[0] + inputs[1]) & modulus_mask(bits))


@pytest.mark.parametrize("bits", [16, 32, 48, 64])
def test_take_is_the_value_and_empties_the_sum(bits: int) -> None:
    total = RunningSum(LENGTH, bits)
    total.add(np.full(LENGTH, 2**bits - 1, dtype=np.uint64))  # wraps past 2^bits
    total.add(np.arange(LENGTH, dtype=np.uint64))
    total.add_masks(_terms())
    value = total.value()
    taken = total.take()
    assert taken.dtype == np.uint64
    assert np.array_equal(taken, value)
    assert int(taken.max()) <= int(modulus_mask(bits))
    assert total.value().shape == (0,)


def _negated(terms: list[MaskTerm]) -> list[MaskTerm]:
    return [MaskTerm(seed=t.seed, label=t.label, context=t.context, sign=-t.sign) for t in terms]


@pytest.mark.parametrize("bits", [20, 32])
def test_running_sum_in_32_bit_words_reduces_wide_inputs_mod_the_word(bits: int) -> None:
    wide = np.array([2**63 + 2**32 + 9, 2**40 - 1, 3], dtype=np.uint64)
    total = RunningSum(3, bits)
    total.add(wide)
    total.add(np.array([1, 1, 5], dtype=np.uint64), sign=-1)
    expected = (wide - np.array([1, 1, 5], dtype=np.uint64)) & modulus_mask(bits)
    assert np.array_equal(total.value(), expected)
