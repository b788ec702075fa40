from __future__ import annotations

import pytest

from fedmap_secure.crypto import labels
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.signing import IdentityKey, verify
from fedmap_secure.errors import CryptoError

ADV = labels.LABEL_KEY_ADVERTISEMENT
CONS = labels.LABEL_CONSISTENCY


def _key(seed: bytes = b"signing") -> IdentityKey:
    return IdentityKey.generate(DeterministicRandom(seed))


def test_sign_and_verify() -> None:
    key = _key()
    signature = key.sign(b"public keys", label=ADV)
    assert len(signature) == 64
    verify(key.public, b"public keys", signature, label=ADV)


def test_wrong_label_fails() -> None:
    key = _key()
    signature = key.sign(b"m", label=ADV)
    with pytest.raises(CryptoError, match="did not verify"):
        verify(key.public, b"m", signature, label=CONS)


def test_wrong_message_fails() -> None:
    key = _key()
    signature = key.sign(b"m", label=ADV)
    with pytest.raises(CryptoError, match="did not verify"):
        verify(key.public, b"n", signature, label=ADV)


def test_wrong_key_fails() -> None:
    signature = _key().sign(b"m", label=ADV)
    with pytest.raises(CryptoError, match="did not verify"):
        verify(_key(b"other").public, b"m", signature, label=ADV)


@pytest.mark.parametrize("position", [0, 31, 32, 63])
def test_tampered_signature_fails(position: int) -> None:
    key = _key()
    signature = bytearray(key.sign(b"m", label=ADV))
    signature[position] ^= 0x01
    with pytest.raises(CryptoError, match="did not verify"):
        verify(key.public, b"m", bytes(signature), label=ADV)


def test_label_is_length_prefixed_not_concatenated() -> None:
    key = _key()
    signature = key.sign(b"x", label=ADV + b"y")
    with pytest.raises(CryptoError):
        verify(key.public, b"yx", signature, label=ADV)


def test_malformed_inputs_raise_crypto_error() -> None:
    key = _key()
    signature = key.sign(b"m", label=ADV)
    with pytest.raises(CryptoError, match="64 bytes"):
        verify(key.public, b"m", signature[:-1], label=ADV)
    with pytest.raises(CryptoError, match="32 bytes"):
        verify(key.public[:-1], b"m", signature, label=ADV)


def test_unlabelled_signing_is_refused() -> None:
    with pytest.raises(ValueError, match="label"):
        _key().sign(b"m", label=b"advertise")


def test_seed_round_trip_and_repr_hides_seed() -> None:
    key = _key()
    assert IdentityKey.from_seed(key.seed_bytes()) == key
    assert key.seed_bytes().hex() not in repr(key)
    assert "_seed" not in repr(key)
    with pytest.raises(CryptoError, match="does not match"):
        IdentityKey(key.public, _key(b"other").seed_bytes())


def test_signatures_are_deterministic() -> None:
    key = _key()
    assert key.sign(b"m", label=ADV) == key.sign(b"m", label=ADV)
