"""Authenticated encryption envelope: ChaCha20-Poly1305 with a random nonce.

Recipe (RFC 8439 AEAD):

    nonce      = random_bytes(12)
    ciphertext = nonce || ChaCha20-Poly1305-Encrypt(key, nonce, plaintext, AD)

so a sealed message is ``12 + len(plaintext) + 16`` bytes. ``open_sealed``
splits off the nonce and verifies the Poly1305 tag over ciphertext and AD,
raising ``CryptoError`` on any mismatch or on input shorter than 28 bytes.

``envelope_ad`` builds the associated data that binds a ciphertext to its
session, protocol stage, sender and receiver::

    AD = encode_fields(LABEL_ENVELOPE_AD, session_id, utf8(stage), utf8(sender), utf8(receiver))

Assumptions: ``key`` is a uniformly random 32-byte key (e.g. from
``agreement.agree`` with ``LABEL_SHARE_ENCRYPTION``) used for few messages: with
96-bit random nonces the collision probability after q messages is about
q^2 / 2^97, negligible for the handful of envelopes one key protects in a round.

Threat addressed (Bonawitz et al. 2017, ShareKeys stage): the server relays
Shamir shares between sites; the envelope hides them from the server
(confidentiality under IND-CPA of ChaCha20) and, through the AD, stops it from
replaying a share into another session, stage, or to another recipient, or
from swapping sender and receiver (integrity under INT-CTXT of Poly1305).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fedmap_secure.crypto import _primitives
from fedmap_secure.crypto.hashing import encode_fields, encode_str
from fedmap_secure.crypto.labels import LABEL_ENVELOPE_AD
from fedmap_secure.errors import CryptoError

KEY_SIZE = _primitives.AEAD_KEY_SIZE
NONCE_SIZE = _primitives.AEAD_NONCE_SIZE
TAG_SIZE = _primitives.AEAD_TAG_SIZE
OVERHEAD = NONCE_SIZE + TAG_SIZE
"""Bytes a sealed message adds to its plaintext."""


def seal(
    key: bytes,
    plaintext: bytes,
    *,
    associated_data: bytes,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """Encrypt and authenticate ``plaintext`` under ``key``; returns nonce || ct || tag."""
    nonce = random_bytes(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise CryptoError(f"random_bytes returned {len(nonce)} bytes, expected {NONCE_SIZE}")
    body = _primitives.aead_encrypt(bytes(key), nonce, bytes(plaintext), bytes(associated_data))
    return nonce + body


def open_sealed(key: bytes, ciphertext: bytes, *, associated_data: bytes) -> bytes:
    """Verify and decrypt a ``seal`` output; ``CryptoError`` if anything was altered."""
    ciphertext = bytes(ciphertext)
    if len(ciphertext) < OVERHEAD:
        raise CryptoError(f"sealed message is {len(ciphertext)} bytes, shorter than {OVERHEAD}")
    nonce, body = ciphertext[:NONCE_SIZE], ciphertext[NONCE_SIZE:]
    return _primitives.aead_decrypt(bytes(key), nonce, body, bytes(associated_data))


def envelope_ad(*, session_id: bytes, stage: str, sender: str, receiver: str) -> bytes:
    """Associated data binding an envelope to (session, stage, sender, receiver)."""
    return encode_fields(
        LABEL_ENVELOPE_AD,
        bytes(session_id),
        encode_str(stage),
        encode_str(sender),
        encode_str(receiver),
    )
