"""The client's memoised public checks remember successes only: a changed byte or a bad key
is refused every time, however often the genuine one was checked."""

from __future__ import annotations

import os

import pytest

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.crypto.labels import LABEL_CONSISTENCY, LABEL_KEY_ADVERTISEMENT
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import CryptoError, RemoteProtocolError
from fedmap_secure.secagg.client import check_public_keys, verify_signature
from fedmap_secure.secagg.messages import AdvertiseKeys

# X25519 u-coordinates of low-order points (RFC 7748 section 6.1; u = 0 and u = 1).
LOW_ORDER = (b"\x00" * 32, b"\x01" + b"\x00" * 31)


def test_a_verified_signature_does_not_vouch_for_other_bytes() -> None:
    key = IdentityKey.generate(os.urandom)
    signature = key.sign(b"payload", label=LABEL_CONSISTENCY)
    for _ in range(2):  # the second call is a memo hit
        verify_signature(key.public, b"payload", signature, label=LABEL_CONSISTENCY)
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    other = IdentityKey.generate(os.urandom)
    for public, message, sig, label in (
        (key.public, b"payload", forged, LABEL_CONSISTENCY),
        (key.public, b"payloaD", signature, LABEL_CONSISTENCY),
        (key.public, b"payload", signature, LABEL_KEY_ADVERTISEMENT),
        (other.public, b"payload", signature, LABEL_CONSISTENCY),
    ):
        for _ in range(2):  # failures are never remembered
            with pytest.raises(CryptoError):
                verify_signature(public, message, sig, label=label)


def test_a_low_order_key_is_refused_every_time() -> None:
    good = IdentityKey.generate(os.urandom)  # any 32 random bytes: a valid X25519 key
    for bad in LOW_ORDER:
        ad = AdvertiseKeys(
            version=PROTOCOL_VERSION,
            session_id=b"s" * 32,
            round_index=0,
            sender="mallory",
            mask_public=good.public,
            encryption_public=bad,
            signature=b"\x00" * 64,
        )
        for _ in range(2):
            with pytest.raises(RemoteProtocolError, match="low-order"):
                check_public_keys(ad)
