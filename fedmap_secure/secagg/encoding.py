"""Byte encodings of everything SecAgg+ hashes, signs or seals (normative: protocol/SPEC.md §4).

All encodings use ``crypto.hashing.encode_fields`` (4-byte big-endian length
prefix per field, so no two field tuples collide) and ``encode_uint`` (8-byte
big-endian unless stated). Lists of site ids are themselves one field:
``encode_fields(*sorted utf8 ids)``.

Every value below binds the protocol version and round; everything after key
advertisement binds the session id, which commits to the setup id and to every
advertised key. A message, signature or envelope from another session, round
or stage therefore never verifies here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.crypto.hashing import digest, encode_fields, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_MODEL_HASH, LABEL_SESSION_ID
from fedmap_secure.crypto.shamir import Share
from fedmap_secure.errors import CryptoError
from fedmap_secure.secagg.config import setup_digest

SHARE_STAGE = "share-keys"
"""The ``stage`` string in the associated data of share envelopes."""


def encode_ids(sites: Iterable[str]) -> bytes:
    """One field holding the sorted site ids."""
    return encode_fields(*(encode_str(s) for s in sorted(sites)))


def context_digest(context: bytes) -> bytes:
    """Digest of the round context (global model, prior, configuration) a site received."""
    return digest(bytes(context), label=LABEL_MODEL_HASH)


def setup_id(
    *,
    round_index: int,
    config_digest: bytes,
    roster_digest: bytes,
    layout_digest: bytes,
    context_hash: bytes,
) -> bytes:
    """The pre-key identifier of a round: what advertisement signatures cover."""
    return setup_digest(
        b"setup-id",
        encode_uint(PROTOCOL_VERSION),
        encode_uint(round_index),
        config_digest,
        roster_digest,
        layout_digest,
        context_hash,
    )


def session_id(setup: bytes, keys: Sequence[tuple[str, bytes, bytes]]) -> bytes:
    """The session id: the setup id and every advertised (site, mask key, encryption key)."""
    entries = [
        encode_fields(encode_str(site), mask_public, enc_public)
        for site, mask_public, enc_public in sorted(keys)
    ]
    return digest(setup, encode_fields(*entries), label=LABEL_SESSION_ID)


def advertisement_payload(
    *, setup: bytes, round_index: int, site: str, mask_public: bytes, encryption_public: bytes
) -> bytes:
    """What a site signs (LABEL_KEY_ADVERTISEMENT) when it advertises its keys."""
    return encode_fields(
        encode_uint(PROTOCOL_VERSION),
        setup,
        encode_uint(round_index),
        encode_str(site),
        mask_public,
        encryption_public,
    )


def consistency_payload(
    *, session: bytes, round_index: int, survivors: Iterable[str], context_hash: bytes
) -> bytes:
    """What a survivor signs (LABEL_CONSISTENCY): the survivor set and the context it received."""
    return encode_fields(
        encode_uint(PROTOCOL_VERSION),
        session,
        encode_uint(round_index),
        encode_ids(survivors),
        context_hash,
    )


def share_plaintext(*, sender: str, receiver: str, self_mask: Share, mask_key: Share) -> bytes:
    """The plaintext sealed in a share envelope."""
    return encode_fields(
        encode_str(sender),
        encode_str(receiver),
        encode_uint(self_mask.index, size=4),
        self_mask.value,
        encode_uint(mask_key.index, size=4),
        mask_key.value,
    )


def decode_fields(data: bytes, count: int) -> tuple[bytes, ...]:
    """Inverse of ``encode_fields`` for exactly ``count`` fields; ``CryptoError`` if malformed."""
    out: list[bytes] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(data):
            raise CryptoError("truncated field encoding")
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise CryptoError("truncated field encoding")
        out.append(data[pos : pos + size])
        pos += size
    if pos != len(data):
        raise CryptoError("trailing bytes after field encoding")
    return tuple(out)


def parse_share_plaintext(data: bytes) -> tuple[str, str, Share, Share]:
    """(sender, receiver, self-mask share, mask-key share); ``CryptoError`` if malformed."""
    sender, receiver, i_self, v_self, i_key, v_key = decode_fields(data, 6)
    if len(i_self) != 4 or len(i_key) != 4:
        raise CryptoError("share index must be 4 bytes")
    try:
        return (
            sender.decode("utf-8"),
            receiver.decode("utf-8"),
            Share(index=int.from_bytes(i_self, "big"), value=v_self),
            Share(index=int.from_bytes(i_key, "big"), value=v_key),
        )
    except UnicodeDecodeError as exc:
        raise CryptoError("share envelope names are not UTF-8") from exc
