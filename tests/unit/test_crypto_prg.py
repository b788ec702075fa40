from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fedmap_secure.crypto import labels
from fedmap_secure.crypto.prg import (
    CHUNK_BYTES,
    MaskTerm,
    Workers,
    add_masks,
    expand_mask,
    word_dtype,
)
from fedmap_secure.errors import CryptoError

SEED = bytes(range(32))
LABEL = labels.LABEL_SELF_MASK


def _expand(
    seed: bytes = SEED,
    *,
    label: bytes = LABEL,
    context: bytes = b"ctx",
    length: int = 64,
    bits: int = 32,
) -> np.ndarray:
    return expand_mask(seed, label=label, context=context, length=length, bits=bits)


def test_deterministic_and_typed() -> None:
    out = _expand()
    assert out.dtype == np.uint64
    assert out.shape == (64,)
    assert np.array_equal(out, _expand())


def test_output_is_a_fresh_writable_array() -> None:
    out = _expand()
    out[0] ^= np.uint64(1)
    assert not np.array_equal(out, _expand())


@pytest.mark.parametrize(
    "changes",
    [
        {"label": labels.LABEL_PAIRWISE_MASK_EXPANSION},
        {"context": b"ctx2"},
        {"seed": bytes(range(1, 33))},
    ],
)
def test_label_context_and_seed_change_the_output(changes: dict[str, bytes]) -> None:
    assert not np.array_equal(_expand(), _expand(**changes))  # type: ignore[arg-type]


@pytest.mark.parametrize("byte_index", [0, 15, 31])
def test_every_part_of_the_seed_matters(byte_index: int) -> None:
    flipped = bytearray(SEED)
    flipped[byte_index] ^= 0x80
    assert not np.array_equal(_expand(), _expand(bytes(flipped)))


def test_shorter_output_is_a_prefix_of_longer() -> None:
    assert np.array_equal(_expand(length=10), _expand(length=1000)[:10])


def test_values_are_the_word_stream_reduced_mod_2_to_bits() -> None:
    full32, full64 = _expand(bits=32, length=500), _expand(bits=64, length=500)
    for bits in (1, 7, 8, 31):
        assert np.array_equal(_expand(bits=bits, length=500), full32 & np.uint64((1 << bits) - 1))
    for bits in (33, 63):
        assert np.array_equal(_expand(bits=bits, length=500), full64 & np.uint64((1 << bits) - 1))


def test_32_bit_words_are_the_halves_of_the_64_bit_words() -> None:
    low, high = _expand(bits=32, length=200)[0::2], _expand(bits=32, length=200)[1::2]
    assert np.array_equal(low | (high << np.uint64(32)), _expand(bits=64, length=100))


def test_word_dtype() -> None:
    assert word_dtype(1) == np.uint32
    assert word_dtype(32) == np.uint32
    assert word_dtype(33) == np.uint64
    assert word_dtype(64) == np.uint64
    with pytest.raises(ValueError, match="bits"):
        word_dtype(0)


@pytest.mark.parametrize("bits", [16, 32, 40, 64])
def test_add_masks_across_chunks_equals_signed_expansions(bits: int) -> None:
    length = 2 * CHUNK_BYTES // word_dtype(bits).itemsize + 5  # three chunks
    seeds = [bytes([i]) * 32 for i in range(1, 4)]
    terms = [
        MaskTerm(seed=s, label=LABEL, context=b"ctx", sign=sign)
        for s, sign in zip(seeds, [1, -1, 1], strict=True)
    ]
    out = np.full(length, 7, dtype=word_dtype(bits))
    add_masks(out, terms, bits=bits)
    m = [_expand(s, length=length, bits=bits) for s in seeds]
    expected = (np.uint64(7) + m[0] - m[1] + m[2]) & np.uint64(
        (1 << bits) - 1 if bits < 64 else 2**64 - 1
    )
    assert np.array_equal(out.astype(np.uint64), expected)


@pytest.mark.parametrize(("bits", "count"), [(32, 2), (64, 3), (20, 7), (64, 9)])
def test_add_masks_with_workers_is_bit_identical_to_serial(bits: int, count: int) -> None:
    length = CHUNK_BYTES // 4 + 3
    terms = [
        MaskTerm(seed=bytes([i]) * 32, label=LABEL, context=b"ctx", sign=1 - 2 * (i % 2))
        for i in range(1, 8)
    ]
    serial = np.full(length, 2**bits - 3, dtype=word_dtype(bits))
    threaded = serial.copy()
    add_masks(serial, terms, bits=bits)
    with ThreadPoolExecutor(2) as pool:
        add_masks(threaded, terms, bits=bits, workers=Workers(executor=pool, count=count))
    assert np.array_equal(serial, threaded)
    assert int(serial.max()) < 2**bits


def test_add_masks_with_workers_raises_a_workers_error() -> None:
    bad = MaskTerm(seed=SEED, label=LABEL, context=b"ctx")
    object.__setattr__(bad, "seed", b"short")  # invalid after construction: fails in the worker
    out = np.zeros(8, dtype=np.uint32)
    with ThreadPoolExecutor(2) as pool, pytest.raises(CryptoError, match="seed"):
        add_masks(
            out,
            [MaskTerm(seed=SEED, label=LABEL, context=b"c"), bad],
            bits=32,
            workers=Workers(executor=pool, count=2),
        )


@pytest.mark.parametrize("count", [0, -1, True])
def test_workers_need_a_positive_count(count: int) -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="worker count"):
        Workers(executor=pool, count=count)


def test_add_masks_with_no_terms_only_reduces() -> None:
    out = np.array([0xFFFFFFFF, 5], dtype=np.uint32)
    add_masks(out, [], bits=16)
    assert out.tolist() == [0xFFFF, 5]


@pytest.mark.parametrize(
    "out",
    [
        np.zeros(4, dtype=np.uint64),
        np.zeros((2, 2), dtype=np.uint32),
        np.zeros(8, dtype=np.uint32)[::2],
    ],
)
def test_add_masks_refuses_a_wrong_accumulator(out: np.ndarray) -> None:
    with pytest.raises(ValueError, match="accumulator"):
        add_masks(out, [], bits=32)


def test_mask_term_validates_and_hides_its_seed() -> None:
    term = MaskTerm(seed=SEED, label=LABEL, context=b"c", sign=-1)
    assert SEED.hex() not in repr(term)
    assert "-1" in repr(term)
    with pytest.raises(ValueError, match="sign"):
        MaskTerm(seed=SEED, label=LABEL, context=b"c", sign=2)
    with pytest.raises(CryptoError, match="32 bytes"):
        MaskTerm(seed=SEED[:31], label=LABEL, context=b"c")
    with pytest.raises(ValueError, match="label"):
        MaskTerm(seed=SEED, label=b"self-mask", context=b"c")


def test_bits_64_uses_the_whole_word() -> None:
    out = _expand(bits=64, length=1000)
    assert int(out.max()) >= 1 << 63
    assert int(out.min()) < 1 << 62


def test_bits_1_is_balanced_bits() -> None:
    out = _expand(bits=1, length=10_000)
    assert set(np.unique(out).tolist()) == {0, 1}
    assert 4_700 < int(out.sum()) < 5_300


def test_bits_33_stays_in_range_and_uses_the_top_bit() -> None:
    out = _expand(bits=33, length=1000)
    assert int(out.max()) < 1 << 33
    assert int(out.max()) >= 1 << 32


def test_bits_8_passes_a_generous_chi_square() -> None:
    n = 256 * 400
    counts = np.bincount(_expand(bits=8, length=n).astype(np.int64), minlength=256)
    assert counts.shape == (256,)
    expected = n / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 255 degrees of freedom: mean 255, sd ~22.6; a biased generator lands far above 400.
    assert 150 < chi2 < 400


def test_zero_length() -> None:
    assert _expand(length=0).shape == (0,)


@pytest.mark.parametrize("bits", [0, 65, -1])
def test_bits_out_of_range(bits: int) -> None:
    with pytest.raises(ValueError, match="bits"):
        _expand(bits=bits)


def test_negative_length() -> None:
    with pytest.raises(ValueError, match="length"):
        _expand(length=-1)


@pytest.mark.parametrize("size", [16, 31, 33])
def test_seed_must_be_256_bits(size: int) -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        _expand(bytes(size))


def test_label_is_required() -> None:
    with pytest.raises(ValueError, match="label"):
        _expand(label=b"self-mask")
