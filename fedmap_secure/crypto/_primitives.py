"""The only module in fedmap_secure that touches cryptographic primitives.

Every other module calls the recipes built on top of this one (``agreement``,
``envelope``, ``prg``, ``shamir``, ``signing``, ``hashing``), so an audit of
which primitives are used, with which parameters, starts and ends here.

Primitives (all from ``cryptography``, backed by OpenSSL):

- X25519 Diffie-Hellman (RFC 7748),
- HKDF-SHA256 (RFC 5869),
- ChaCha20-Poly1305 AEAD (RFC 8439) with a 96-bit nonce,
- the AES-256-CTR keystream (FIPS 197, NIST SP 800-38A; 128-bit big-endian counter),
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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
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
AES256_KEY_SIZE = 32
AES_BLOCK_SIZE = 16
KEYSTREAM_SLACK = AES_BLOCK_SIZE - 1
SHA256_SIZE = 32
HKDF_MAX_OUTPUT = 255 * SHA256_SIZE


def _require_len(name: str, value: bytes, size: int) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise CryptoError(f"{name} must be {size} bytes, got {got}")


class X25519Private:
    """An X25519 private scalar, loaded once so that each agreement is one scalar multiplication.

    Loading derives the public key u = X25519(k, 9) (RFC 7748 section 5); ``repr``
    never shows the scalar.
    """

    __slots__ = ("_key", "public")

    def __init__(self, private_raw: bytes) -> None:
        _require_len("X25519 private key", private_raw, X25519_KEY_SIZE)
        self._key = X25519PrivateKey.from_private_bytes(bytes(private_raw))
        self.public: bytes = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def __repr__(self) -> str:
        return "X25519Private(<secret>)"

    def shared_secret(self, peer_public: bytes) -> bytes:
        """The raw X25519 output X25519(k, u) (RFC 7748 section 5).

        Raises ``CryptoError`` if the output is all zero, which happens exactly when
        ``peer_public`` is a point of small order (RFC 7748 section 6.1): such a key
        would let an attacker force a known shared secret.
        """
        _require_len("X25519 peer public key", peer_public, X25519_KEY_SIZE)
        try:
            peer = X25519PublicKey.from_public_bytes(bytes(peer_public))
            shared = self._key.exchange(peer)
        except ValueError as exc:  # OpenSSL refuses an all-zero result
            raise CryptoError("X25519 peer public key is a low-order point") from exc
        if hmac.compare_digest(shared, bytes(X25519_KEY_SIZE)):
            raise CryptoError("X25519 peer public key is a low-order point")
        return shared


def x25519_public_from_private(private_raw: bytes) -> bytes:
    """Return the X25519 public key u = X25519(k, 9) for the 32-byte scalar ``k``."""
    return X25519Private(private_raw).public


def x25519_shared_secret(private_raw: bytes, peer_public: bytes) -> bytes:
    """``X25519Private(private_raw).shared_secret(peer_public)`` (one-off agreement)."""
    return X25519Private(private_raw).shared_secret(peer_public)


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


class Aes256CtrKeystream:
    """The AES-256-CTR keystream (NIST SP 800-38A section 6.5) of one key, read in order.

    Block j of the stream is AES-256_K(CB_j) with CB_j = (initial_counter + j) mod 2^128
    encoded as 16 big-endian bytes; the default initial counter block is 16 zero bytes.
    The stream is produced by encrypting zero bytes, which runs at OpenSSL's AES-NI
    speed (several GB/s) and writes straight into the caller's buffer (no copies).
    """

    __slots__ = ("_encryptor",)

    def __init__(self, key: bytes, *, initial_counter: bytes = bytes(AES_BLOCK_SIZE)) -> None:
        _require_len("AES-256 key", key, AES256_KEY_SIZE)
        _require_len("AES-CTR initial counter block", initial_counter, AES_BLOCK_SIZE)
        cipher = Cipher(algorithms.AES(bytes(key)), modes.CTR(bytes(initial_counter)))
        self._encryptor = cipher.encryptor()

    def read_into(self, out: bytearray, nbytes: int) -> None:
        """Write the next ``nbytes`` keystream bytes to ``out[:nbytes]``.

        ``out`` must hold at least ``nbytes + KEYSTREAM_SLACK`` bytes (the room the
        underlying ``update_into`` may ask for); bytes past ``nbytes`` are unspecified.
        """
        if not 0 <= nbytes <= len(out) - KEYSTREAM_SLACK:
            raise ValueError(f"buffer of {len(out)} bytes cannot take {nbytes} keystream bytes")
        written = self._encryptor.update_into(_zeros(nbytes), out)
        if written != nbytes:
            raise CryptoError("AES-CTR produced a keystream of unexpected length")

    def read(self, nbytes: int) -> bytes:
        """The next ``nbytes`` keystream bytes as a fresh ``bytes`` object."""
        out = bytearray(nbytes + KEYSTREAM_SLACK)
        self.read_into(out, nbytes)
        return bytes(out[:nbytes])


def _zeros(nbytes: int) -> bytes | memoryview:
    """``nbytes`` zero bytes: a view of one shared block when small enough (no allocation)."""
    if nbytes <= len(_ZERO_BLOCK):
        return memoryview(_ZERO_BLOCK)[:nbytes]
    return bytes(nbytes)


_ZERO_BLOCK = bytes(1 << 20)


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
