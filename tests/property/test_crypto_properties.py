from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.crypto import _primitives, labels, prg
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.envelope import open_sealed, seal
from fedmap_secure.crypto.hashing import encode_fields
from fedmap_secure.crypto.prg import (
    MaskTerm,
    MaskWords,
    add_masks,
    derive_stream_key,
    expand_mask,
    word_dtype,
)
from fedmap_secure.crypto.shamir import combine, split
from fedmap_secure.errors import CryptoError


@st.composite
def _sharing(draw: st.DrawFn) -> tuple[bytes, int, int, list[int], bytes]:
    secret = draw(st.binary(min_size=1, max_size=64))
    n_shares = draw(st.integers(min_value=1, max_value=8))
    threshold = draw(st.integers(min_value=1, max_value=n_shares))
    subset = draw(st.lists(st.integers(1, n_shares), unique=True, max_size=n_shares))
    seed = draw(st.binary(min_size=1, max_size=8))
    return secret, threshold, n_shares, subset, seed


@settings(max_examples=150, deadline=None)
@given(_sharing())
def test_shamir_recovers_exactly_when_enough_shares(
    case: tuple[bytes, int, int, list[int], bytes],
) -> None:
    secret, threshold, n_shares, subset, seed = case
    shares, commitment = split(
        secret, threshold=threshold, n_shares=n_shares, random_bytes=DeterministicRandom(seed)
    )
    chosen = [shares[i - 1] for i in subset]
    if len(chosen) >= threshold:
        assert combine(chosen, threshold=threshold, commitment=commitment) == secret
    else:
        with pytest.raises(CryptoError, match="valid shares"):
            combine(chosen, threshold=threshold, commitment=commitment)


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    plaintext=st.binary(max_size=256),
    ad=st.binary(max_size=64),
    flip=st.integers(min_value=0),
)
def test_seal_open_round_trip_and_any_bit_flip_fails(
    key: bytes, plaintext: bytes, ad: bytes, flip: int
) -> None:
    sealed = seal(key, plaintext, associated_data=ad)
    assert open_sealed(key, sealed, associated_data=ad) == plaintext
    tampered = bytearray(sealed)
    bit = flip % (8 * len(sealed))
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CryptoError):
        open_sealed(key, bytes(tampered), associated_data=ad)


@settings(max_examples=60, deadline=None)
@given(
    private_a=st.binary(min_size=32, max_size=32),
    private_b=st.binary(min_size=32, max_size=32),
    context=st.binary(max_size=40),
)
def test_agreement_is_symmetric_for_any_keys(
    private_a: bytes, private_b: bytes, context: bytes
) -> None:
    a = AgreementKeyPair.from_private_bytes(private_a)
    b = AgreementKeyPair.from_private_bytes(private_b)
    label = labels.LABEL_PAIRWISE_MASK
    assert agree(a, b.public, label=label, context=context) == agree(
        b, a.public, label=label, context=context
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    bits=st.integers(min_value=1, max_value=64),
    length=st.integers(min_value=0, max_value=300),
)
def test_expand_mask_is_the_keystream_words_reduced(seed: bytes, bits: int, length: int) -> None:
    context = b"c"
    out = expand_mask(seed, label=labels.LABEL_SELF_MASK, context=context, length=length, bits=bits)
    key = derive_stream_key(seed, label=labels.LABEL_SELF_MASK, context=context)
    width = 4 if bits <= 32 else 8
    raw = _primitives.Aes256CtrKeystream(key).read(width * length)
    words = [int.from_bytes(raw[width * i : width * (i + 1)], "little") for i in range(length)]
    assert out.dtype == np.uint64
    assert out.tolist() == [w % (1 << bits) for w in words]


@settings(max_examples=40, deadline=None)
@given(
    seeds=st.lists(st.binary(min_size=32, max_size=32), min_size=0, max_size=5),
    signs=st.lists(st.sampled_from([1, -1]), min_size=5, max_size=5),
    bits=st.integers(min_value=1, max_value=64),
    length=st.integers(min_value=0, max_value=40),
    chunk=st.integers(min_value=1, max_value=9),
    batch=st.integers(min_value=1, max_value=3),
)
def test_add_masks_is_the_signed_sum_of_expansions(
    seeds: list[bytes], signs: list[int], bits: int, length: int, chunk: int, batch: int
) -> None:
    label, context = labels.LABEL_PAIRWISE_MASK_EXPANSION, b"session"
    start = np.arange(length, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    start &= np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)
    expected = [int(v) for v in start]
    for seed, sign in zip(seeds, signs, strict=False):
        mask = expand_mask(seed, label=label, context=context, length=length, bits=bits)
        expected = [(e + sign * int(v)) % (1 << bits) for e, v in zip(expected, mask, strict=True)]
    terms = [
        MaskTerm(seed=seed, label=label, context=context, sign=sign)
        for seed, sign in zip(seeds, signs, strict=False)
    ]
    out = cast(MaskWords, start.astype(word_dtype(bits)))
    with _small_steps(chunk, batch):
        add_masks(out, terms, bits=bits)
    assert out.tolist() == expected


@contextlib.contextmanager
def _small_steps(words: int, terms: int) -> Iterator[None]:
    """Force tiny chunks (``words`` 64-bit or 2 x ``words`` 32-bit words) and term batches
    so their boundaries fall inside short inputs."""
    saved = prg.CHUNK_BYTES, prg.TERM_BATCH
    prg.CHUNK_BYTES, prg.TERM_BATCH = 8 * words, terms
    try:
        yield
    finally:
        prg.CHUNK_BYTES, prg.TERM_BATCH = saved


_FIELDS = st.lists(st.binary(max_size=6), max_size=4)


@given(first=_FIELDS, second=_FIELDS)
def test_encode_fields_is_injective(first: list[bytes], second: list[bytes]) -> None:
    if encode_fields(*first) == encode_fields(*second):
        assert first == second
