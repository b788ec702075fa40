"""The only module in fedmap_secure that touches cryptographic primitives.

Every other module calls the recipes built on top of this one (``agreement``,
``envelope``, ``prg``, ``shamir``, ``signing``, ``hashing``), so an audit of
which primitives are used, with which parameters, starts and ends here.

Primitives (all from ``cryptography``, backed by OpenSSL):

- X25519 Diffie-Hellman (RFC 7748),
- HKDF-SHA256 (RFC 5869),
- ChaCha20-Poly1305 AEAD (RFC 8439) with a 96-bit nonce,
- the raw ChaCha20 keystream (RFC 8439, 32-bit block counter, 96-bit nonce),
- Ed25519 signatures (RFC 8032, pure Ed25519),
- SHA-256 (FIPS 180-4).

Failures of the underlying library (``InvalidTag``, ``InvalidSignature``,
``ValueError`` on malformed keys) are translated to ``CryptoError``; messages
never contain key material. No function here reads a clock, a file or the
operating system's randomness: callers pass every secret in.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedmap_secure.errors import CryptoError

X25519_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_PUBLIC_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
AEAD_KEY_SIZE = 32
AEAD_NONCE_SIZE = 12
AEAD_TAG_SIZE = 16
CHACHA20_KEY_SIZE = 32
CHACHA20_NONCE_SIZE = 12
CHACHA20_BLOCK_SIZE = 64
SHA256_SIZE = 32
HKDF_MAX_OUTPUT = 255 * SHA256_SIZE
# RFC 8439 uses a 32-bit block counter: at most 2^32 blocks of 64 bytes per (key, nonce).
CHACHA20_MAX_KEYSTREAM = (2**32) * CHACHA20_BLOCK_SIZE


def _require_len(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise CryptoError(f"{name} must be {size} bytes, got {got}")


def x25519_public_from_private(private_raw: bytes) -> bytes:
    """Return the X25519 public key u = X25519(k, 9) for the 32-byte scalar ``k``."""
    _require_len("X25519 private key", private_raw, X25519_KEY_SIZE)
    key = X25519PrivateKey.from_private_bytes(bytes(private_raw))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_shared_secret(private_raw: bytes, peer_public: bytes) -> bytes:
    """Return the raw X25519 output X25519(k, u) (RFC 7748 section 5).

    Raises ``CryptoError`` if the output is all zero, which happens exactly when
    ``peer_public`` is a point of small order (RFC 7748 section 6.1): such a key
    would let an attacker force a known shared secret.
    """
    _require_len("X25519 private key", private_raw, X25519_KEY_SIZE)
    _require_len("X25519 peer public key", peer_public, X25519_KEY_SIZE)
    key = X25519PrivateKey.from_private_bytes(bytes(private_raw))
    try:
        peer = X25519PublicKey.from_public_bytes(bytes(peer_public))
        shared = key.exchange(peer)
    except ValueError as exc:  # OpenSSL refuses an all-zero result
        raise CryptoError("X25519 peer public key is a low-order point") from exc
    if hmac.compare_digest(shared, bytes(X25519_KEY_SIZE)):
        raise CryptoError("X25519 peer public key is a low-order point")
    return shared


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 extract-then-expand (RFC 5869); ``salt=None`` means 32 zero bytes."""
    if not 1 <= length <= HKDF_MAX_OUTPUT:
        raise ValueError(f"HKDF output length must be in 1..{HKDF_MAX_OUTPUT}, got {length}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info)
    return hkdf.derive(bytes(ikm))


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption (RFC 8439); returns ciphertext || 16-byte tag."""
    _require_len("AEAD key", key, AEAD_KEY_SIZE)
    _require_len("AEAD nonce", nonce, AEAD_NONCE_SIZE)
    return ChaCha20Poly1305(bytes(key)).encrypt(bytes(nonce), plaintext, associated_data)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    """ChaCha20-Poly1305 decryption; ``CryptoError`` if the tag does not verify."""
    _require_len("AEAD key", key, AEAD_KEY_SIZE)
    _require_len("AEAD nonce", nonce, AEAD_NONCE_SIZE)
    if len(ciphertext) < AEAD_TAG_SIZE:
        raise CryptoError("AEAD ciphertext is shorter than its tag")
    try:
        return ChaCha20Poly1305(bytes(key)).decrypt(bytes(nonce), ciphertext, associated_data)
    except InvalidTag as exc:
        raise CryptoError("AEAD authentication tag did not verify") from exc


def chacha20_keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    """The first ``length`` bytes of the RFC 8439 ChaCha20 keystream, counter starting at 0.

    Computed by encrypting ``length`` zero bytes in one call, which runs at
    OpenSSL's vectorised speed (several hundred MB/s or more).
    """
    _require_len("ChaCha20 key", key, CHACHA20_KEY_SIZE)
    _require_len("ChaCha20 nonce", nonce, CHACHA20_NONCE_SIZE)
    if not 0 <= length <= CHACHA20_MAX_KEYSTREAM:
        raise ValueError(f"keystream length must be in 0..{CHACHA20_MAX_KEYSTREAM}, got {length}")
    # cryptography's ChaCha20 takes a 16-byte value: 4-byte little-endian counter || 12-byte nonce.
    full_nonce = (0).to_bytes(4, "little") + bytes(nonce)
    encryptor = Cipher(algorithms.ChaCha20(bytes(key), full_nonce), mode=None).encryptor()
    stream = encryptor.update(bytes(length))
    tail = encryptor.finalize()  # always empty for a stream cipher; avoid copying ``stream``
    return stream + tail if tail else stream


def chacha20_keystream_words(key: bytes, nonce: bytes, count: int) -> npt.NDArray[np.uint64]:
    """The keystream of ``chacha20_keystream`` read as ``count`` little-endian uint64 words.

    Word i is bytes [8i, 8i + 8) of the keystream, interpreted little-endian.
    Encrypts a zero buffer straight into a fresh numpy array (no extra copies),
    so 10^6 words take a few milliseconds.
    """
    _require_len("ChaCha20 key", key, CHACHA20_KEY_SIZE)
    _require_len("ChaCha20 nonce", nonce, CHACHA20_NONCE_SIZE)
    if not 0 <= count <= CHACHA20_MAX_KEYSTREAM // 8:
        raise ValueError(f"word count must be in 0..{CHACHA20_MAX_KEYSTREAM // 8}, got {count}")
    full_nonce = (0).to_bytes(4, "little") + bytes(nonce)
    encryptor = Cipher(algorithms.ChaCha20(bytes(key), full_nonce), mode=None).encryptor()
    out = bytearray(8 * count)
    written = encryptor.update_into(bytes(8 * count), out)
    if written != 8 * count or encryptor.finalize():
        raise CryptoError("ChaCha20 produced a keystream of unexpected length")
    # frombuffer over a bytearray is writable and shares its memory: no copy.
    return np.frombuffer(out, dtype="<u8").astype(np.uint64, copy=False)


def ed25519_public_from_seed(seed: bytes) -> bytes:
    """The Ed25519 public key A for the 32-byte secret seed (RFC 8032 section 5.1.5)."""
    _require_len("Ed25519 seed", seed, ED25519_SEED_SIZE)
    key = Ed25519PrivateKey.from_private_bytes(bytes(seed))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """Pure Ed25519 signature (RFC 8032); deterministic, 64 bytes."""
    _require_len("Ed25519 seed", seed, ED25519_SEED_SIZE)
    return Ed25519PrivateKey.from_private_bytes(bytes(seed)).sign(message)


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Verify a pure Ed25519 signature; ``CryptoError`` on any failure."""
    _require_len("Ed25519 public key", public, ED25519_PUBLIC_SIZE)
    _require_len("Ed25519 signature", signature, ED25519_SIGNATURE_SIZE)
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes(public))
        key.verify(bytes(signature), message)
    except (InvalidSignature, ValueError) as exc:
        raise CryptoError("Ed25519 signature did not verify") from exc


def sha256(data: bytes) -> bytes:
    """SHA-256 of ``data`` (FIPS 180-4)."""
    return hashlib.sha256(data).digest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    return hmac.compare_digest(a, b)
