"""Write the crypto known-answer vectors protocol/vectors/crypto_*.json.

Run from the repository root:  PYTHONPATH=. python protocol/vectors/generate.py

Every input is fixed here (private keys, seeds, nonces, and the exact bytes
each randomised call consumed), so the files are reproducible byte for byte
and another implementation can check itself against them without our code.
tests/unit/test_vectors_crypto.py recomputes every vector from its inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedmap_secure.crypto import labels
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.envelope import envelope_ad, seal
from fedmap_secure.crypto.hashing import digest, encode_fields
from fedmap_secure.crypto.prg import derive_stream_key, expand_mask
from fedmap_secure.crypto.shamir import Share, split
from fedmap_secure.crypto.signing import IdentityKey, signed_bytes

OUT = Path(__file__).resolve().parent
Vector = dict[str, Any]


class _Recorder:
    """Wrap a random_bytes callable and remember everything it returned."""

    def __init__(self, source: Callable[[int], bytes]) -> None:
        self._source = source
        self.consumed = b""

    def __call__(self, n: int) -> bytes:
        out = self._source(n)
        self.consumed += out
        return out


def _fixed(value: bytes) -> Callable[[int], bytes]:
    """A random_bytes that must be asked for exactly ``len(value)`` bytes, and returns ``value``."""

    def random_bytes(n: int) -> bytes:
        if n != len(value):
            raise ValueError(f"asked for {n} bytes, have {len(value)}")
        return value

    return random_bytes


def _stream(name: str) -> DeterministicRandom:
    return DeterministicRandom(name.encode())


def _document(recipe: str, vectors: list[Vector], **extra: Any) -> dict[str, Any]:
    return {
        "recipe": recipe,
        "spec": "protocol/CRYPTO.md",
        "encoding": "byte strings are lowercase hex; labels are ASCII",
        **extra,
        "vectors": vectors,
    }


def hashing_vectors() -> dict[str, Any]:
    cases = [
        (labels.LABEL_SESSION_ID, [b"round-0001", b"site-a,site-b"]),
        (labels.LABEL_TRANSCRIPT, [b""]),
        (labels.LABEL_MODEL_HASH, []),
        (labels.LABEL_TRANSCRIPT, [b"ab", b"c"]),
        (labels.LABEL_TRANSCRIPT, [b"a", b"bc"]),
    ]
    vectors = [
        {
            "label": label.decode(),
            "parts": [part.hex() for part in parts],
            "encoded": encode_fields(label, *parts).hex(),
            "digest": digest(*parts, label=label).hex(),
        }
        for label, parts in cases
    ]
    return _document("digest(*parts, label) = SHA-256(encode_fields(label, *parts))", vectors)


def agreement_vectors() -> dict[str, Any]:
    rng = _stream("agreement")
    vectors = []
    for label, context in [
        (labels.LABEL_PAIRWISE_MASK, b"session-1"),
        (labels.LABEL_SHARE_ENCRYPTION, b"session-1"),
        (labels.LABEL_PAIRWISE_MASK, b""),
    ]:
        a, b = AgreementKeyPair.generate(rng), AgreementKeyPair.generate(rng)
        vectors.append(
            {
                "private_a": a.private_bytes().hex(),
                "public_a": a.public.hex(),
                "private_b": b.private_bytes().hex(),
                "public_b": b.public.hex(),
                "label": label.decode(),
                "context": context.hex(),
                "key": agree(a, b.public, label=label, context=context).hex(),
            }
        )
    low_order = [
        "00" * 32,
        "01" + "00" * 31,
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "ec" + "ff" * 30 + "7f",
    ]
    return _document(
        "X25519 then HKDF-SHA256(salt=none, info=encode_fields(label, context, lo_pk, hi_pk))",
        vectors,
        rejected_peer_publics=low_order,
    )


def envelope_vectors() -> dict[str, Any]:
    rng = _stream("envelope")
    vectors = []
    for plaintext, stage, sender, receiver in [
        (b"", "share-keys", "site-a", "site-b"),
        (b"a shamir share of 98 bytes would go here", "share-keys", "site-b", "site-a"),
    ]:
        key, session_id, nonce = rng(32), rng(32), rng(12)
        ad = envelope_ad(session_id=session_id, stage=stage, sender=sender, receiver=receiver)
        sealed = seal(key, plaintext, associated_data=ad, random_bytes=_fixed(nonce))
        vectors.append(
            {
                "key": key.hex(),
                "nonce": nonce.hex(),
                "plaintext": plaintext.hex(),
                "session_id": session_id.hex(),
                "stage": stage,
                "sender": sender,
                "receiver": receiver,
                "associated_data": ad.hex(),
                "sealed": sealed.hex(),
            }
        )
    return _document("nonce || ChaCha20-Poly1305(key, nonce, plaintext, AD)", vectors)


def prg_vectors() -> dict[str, Any]:
    rng = _stream("prg")
    vectors = []
    for label, context, length, bits in [
        (labels.LABEL_SELF_MASK, b"session-1", 8, 32),
        (labels.LABEL_PAIRWISE_MASK_EXPANSION, b"session-1", 8, 64),
        (labels.LABEL_SELF_MASK, b"", 16, 1),
        (labels.LABEL_SELF_MASK, b"session-2", 1000, 20),
    ]:
        seed = rng(32)
        values = expand_mask(seed, label=label, context=context, length=length, bits=bits)
        vectors.append(
            {
                "seed": seed.hex(),
                "label": label.decode(),
                "context": context.hex(),
                "length": length,
                "bits": bits,
                "stream_key": derive_stream_key(seed, label=label, context=context).hex(),
                "first_values": [str(int(v)) for v in values[:8]],
                "values_sha256": hashlib.sha256(values.astype("<u8").tobytes()).hexdigest(),
            }
        )
    return _document(
        "AES-256-CTR(HKDF(seed, info=encode_fields(label, context)), counter block 0^128) read "
        "as LE uint32 words (bits <= 32) or LE uint64 words (bits > 32), each mod 2^bits; "
        "first_values are decimal, values_sha256 hashes all values as LE uint64",
        vectors,
    )


def shamir_vectors() -> dict[str, Any]:
    vectors: list[Vector] = []
    first_shares: tuple[Share, ...] = ()
    for secret, threshold, n_shares in [
        (bytes(range(32)), 3, 5),
        (b"\x00\x01", 2, 2),
        (b"\xff" * 64, 1, 3),
    ]:
        recorder = _Recorder(_stream(f"shamir-{threshold}-{n_shares}"))
        shares, commitment = split(
            secret, threshold=threshold, n_shares=n_shares, random_bytes=recorder
        )
        first_shares = first_shares or shares
        vectors.append(
            {
                "secret": secret.hex(),
                "threshold": threshold,
                "n_shares": n_shares,
                "random_bytes": recorder.consumed.hex(),
                "shares": [{"index": s.index, "value": s.value.hex()} for s in shares],
                "commitment": commitment.hex(),
            }
        )
    bad_value = bytearray(first_shares[1].value)
    bad_value[-1] ^= 1  # flips a blind bit: still well-formed, only the commitment fails
    corrupted = [
        {"index": 1, "value": first_shares[0].value.hex()},
        {"index": 2, "value": bad_value.hex()},
        {"index": 3, "value": first_shares[2].value.hex()},
    ]
    return _document(
        "split/combine over GF(2^521-1); value = y (66 bytes BE) || blind (32 bytes); "
        "commitment = concat SHA-256 digest(uint32 index, value, label=share-commitment)",
        vectors,
        rejected_combination={
            "vector": 0,
            "shares": corrupted,
            "threshold": 3,
            "bad_indices": [2],
        },
    )


def signing_vectors() -> dict[str, Any]:
    rng = _stream("signing")
    vectors = []
    for label, message in [
        (labels.LABEL_KEY_ADVERTISEMENT, b"c-public||s-public"),
        (labels.LABEL_CONSISTENCY, b""),
    ]:
        key = IdentityKey.generate(rng)
        vectors.append(
            {
                "seed": key.seed_bytes().hex(),
                "public": key.public.hex(),
                "label": label.decode(),
                "message": message.hex(),
                "signed_bytes": signed_bytes(message, label=label).hex(),
                "signature": key.sign(message, label=label).hex(),
            }
        )
    return _document("Ed25519(seed, encode_fields(label, message))", vectors)


GENERATORS: dict[str, Callable[[], dict[str, Any]]] = {
    "crypto_hashing.json": hashing_vectors,
    "crypto_agreement.json": agreement_vectors,
    "crypto_envelope.json": envelope_vectors,
    "crypto_prg.json": prg_vectors,
    "crypto_shamir.json": shamir_vectors,
    "crypto_signing.json": signing_vectors,
}


def main() -> None:
    for name, build in GENERATORS.items():
        path = OUT / name
        path.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
