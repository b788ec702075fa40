from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.envelope import open_sealed, seal
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
