"""Ed25519 identity signatures over labelled messages.

Recipe (RFC 8032, pure Ed25519):

    signed_bytes = encode_fields(label, message)
    signature    = Ed25519-Sign(seed, signed_bytes)            (64 bytes)
    verify(public, message, signature, label) checks Ed25519 over the same bytes

The label (labels.py, e.g. ``LABEL_KEY_ADVERTISEMENT``) is length-prefixed in
front of the message, so a signature made for one protocol step can never be
replayed as a signature for another step or for another protocol that uses
the same identity key.

Assumptions: Ed25519 is existentially unforgeable under chosen-message
attacks (EUF-CMA); each site's identity public key is distributed
authentically out of band (the consortium's site registry). Threat
addressed: an active server substituting a site's advertised X25519 keys
(a man-in-the-middle that would let it read shares or learn pairwise masks),
or lying about which sites survived, as in the malicious-server variant of
Bonawitz et al. (CCS 2017, section 6) and Bell et al. (CCS 2020). Flower's
SecAgg+ leaves public keys unsigned; here every advertised key set is signed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import encode_fields
from fedmap_secure.crypto.labels import require_label
from fedmap_secure.errors import CryptoError

SEED_SIZE = _primitives.ED25519_SEED_SIZE
PUBLIC_KEY_SIZE = _primitives.ED25519_PUBLIC_SIZE
SIGNATURE_SIZE = _primitives.ED25519_SIGNATURE_SIZE


@dataclass(frozen=True)
class IdentityKey:
    """A site's long-term Ed25519 key. The seed is excluded from ``repr`` and equality.

    Build with ``generate`` or ``from_seed``; the constructor checks that
    ``public`` belongs to ``_seed``.
    """

    public: bytes
    _seed: bytes = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        derived = _primitives.ed25519_public_from_seed(self._seed)
        if not _primitives.constant_time_equal(derived, self.public):
            raise CryptoError("Ed25519 public key does not match its seed")

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> IdentityKey:
        """A fresh identity key from a 32-byte seed drawn from ``random_bytes``."""
        seed = random_bytes(SEED_SIZE)
        if len(seed) != SEED_SIZE:
            raise CryptoError(f"random_bytes returned {len(seed)} bytes, expected {SEED_SIZE}")
        return cls.from_seed(seed)

    @classmethod
    def from_seed(cls, seed: bytes) -> IdentityKey:
        """The identity key with the given 32-byte RFC 8032 secret seed."""
        seed = bytes(seed)
        return cls(_primitives.ed25519_public_from_seed(seed), seed)

    def seed_bytes(self) -> bytes:
        """The 32-byte secret seed (to store in the site's key file; keep it secret)."""
        return self._seed

    def sign(self, message: bytes, *, label: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``encode_fields(label, message)``."""
        return _primitives.ed25519_sign(self._seed, signed_bytes(message, label=label))


def verify(public: bytes, message: bytes, signature: bytes, *, label: bytes) -> None:
    """Raise ``CryptoError`` unless ``signature`` is ``public``'s signature of (label, message)."""
    _primitives.ed25519_verify(bytes(public), signed_bytes(message, label=label), bytes(signature))


def signed_bytes(message: bytes, *, label: bytes) -> bytes:
    """The exact bytes Ed25519 signs: ``encode_fields(label, message)``."""
    require_label(label)
    return encode_fields(label, bytes(message))
