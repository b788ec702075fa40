"""X25519 key agreement with labelled HKDF-SHA256 key derivation.

Recipe (Bonawitz et al., CCS 2017, section 4 "KA.agree"; Bell et al., CCS 2020):

    z   = X25519(sk_a, pk_b)                      (32 bytes, RFC 7748)
    lo, hi = sorted([pk_a, pk_b])                 (bytewise)
    key = HKDF-SHA256(ikm = z, salt = none (32 zero bytes),
                      info = encode_fields(label, context, lo, hi), L = 32)

Properties and assumptions:

- Symmetric: ``agree(a, pk_b) == agree(b, pk_a)`` because X25519 commutes and
  the public keys enter ``info`` in sorted order.
- Under the gap-Diffie-Hellman assumption on Curve25519 and with HKDF as a
  random oracle / PRF, ``key`` is indistinguishable from random to anyone who
  knows neither private key.
- ``label`` separates uses (pairwise mask seed vs. share-encryption key), so
  the two keys a pair derives from one X25519 secret are independent;
  ``context`` binds the key to one session (e.g. the session id), so keys never
  repeat across rounds even if key pairs were reused.
- Binding both public keys into ``info`` prevents key-compromise and
  unknown-key-share confusions where distinct key pairs yield one shared point.
- Low-order peer keys (which force an all-zero, attacker-known secret) are
  rejected with ``CryptoError`` (RFC 7748 section 6.1).

Threat addressed: a passive server, which relays all public keys, learns
nothing about the pairwise masks or share-encryption keys of honest sites;
an active peer cannot force a predictable key. (Authenticity of the public
keys themselves comes from signing them, see signing.py.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import encode_fields
from fedmap_secure.crypto.labels import require_label
from fedmap_secure.errors import CryptoError

KEY_SIZE = _primitives.X25519_KEY_SIZE
"""Size of X25519 private and public keys, and of every derived key."""
DERIVED_KEY_SIZE = 32


@dataclass(frozen=True)
class AgreementKeyPair:
    """An X25519 key pair. The private scalar is excluded from ``repr`` and equality.

    Build with ``generate`` or ``from_private_bytes``; the constructor checks
    that ``public`` is the public key of ``_private``.
    """

    public: bytes
    _private: bytes = field(repr=False, compare=False)
    _loaded: _primitives.X25519Private = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        loaded = _primitives.X25519Private(self._private)
        if not _primitives.constant_time_equal(loaded.public, self.public):
            raise CryptoError("X25519 public key does not match its private key")
        object.__setattr__(self, "_loaded", loaded)

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> AgreementKeyPair:
        """A fresh key pair from 32 bytes of ``random_bytes`` (X25519 clamps the scalar)."""
        raw = random_bytes(KEY_SIZE)
        if len(raw) != KEY_SIZE:
            raise CryptoError(f"random_bytes returned {len(raw)} bytes, expected {KEY_SIZE}")
        return cls.from_private_bytes(raw)

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> AgreementKeyPair:
        """The key pair whose private key is the 32-byte string ``raw``."""
        raw = bytes(raw)
        return cls(_primitives.x25519_public_from_private(raw), raw)

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (SecAgg Shamir-shares the mask private key)."""
        return self._private


def agree(own: AgreementKeyPair, peer_public: bytes, *, label: bytes, context: bytes) -> bytes:
    """Derive the 32-byte key shared by ``own`` and the holder of ``peer_public``.

    ``CryptoError`` if ``peer_public`` is malformed or of low order.
    """
    return _derive(own._loaded, peer_public, label=label, context=context)


def agree_from_private(
    private_raw: bytes, peer_public: bytes, *, label: bytes, context: bytes
) -> bytes:
    """``agree`` from a raw private key, e.g. one reconstructed from Shamir shares.

    The server uses this after a site dropped out: it rebuilds the site's mask
    private key and recomputes each pairwise seed to cancel the orphaned masks.
    """
    loaded = _primitives.X25519Private(bytes(private_raw))
    return _derive(loaded, peer_public, label=label, context=context)


def _derive(
    own: _primitives.X25519Private, peer_public: bytes, *, label: bytes, context: bytes
) -> bytes:
    require_label(label)
    shared = own.shared_secret(bytes(peer_public))
    lo, hi = sorted((own.public, bytes(peer_public)))
    info = encode_fields(label, bytes(context), lo, hi)
    return _primitives.hkdf_sha256(shared, salt=None, info=info, length=DERIVED_KEY_SIZE)
