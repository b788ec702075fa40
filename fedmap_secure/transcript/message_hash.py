"""Canonical bytes and digests of typed SecAgg+ messages, for transcripts.

``encode_message(m)`` is ``encode_fields`` (CRYPTO §2) over the message's
type name, its header (``u64(version)``, ``session_id``, ``u64(round)``,
``utf8(sender)``) and then its fields in declaration order: bytes as they
are, ints as ``u64`` (share indices ``u32``), strings UTF-8, a tuple as one
field holding ``encode_fields`` of its items *in the order carried* (the
transcript records what was sent, not a normalised form), and the masked
vector as m big-endian 8-byte words. ``message_digest(m) = digest("message",
encode_message(m); LABEL_TRANSCRIPT)``.

The encoding is injective (length prefixes, the type name first), so equal
digests mean equal messages under SHA-256 collision resistance. It is
independent of any wire framing: the gRPC transport and the in-process
driver give the same digest for the same message. The digest of a message
that carries secrets (sealed envelopes, masked input, revealed shares)
reveals nothing usable about them beyond what SHA-256 preimage resistance
allows, and those values all have >= 128 bits of entropy.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedmap_secure.crypto.hashing import digest, encode_fields, encode_str, encode_uint
from fedmap_secure.crypto.labels import LABEL_TRANSCRIPT
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyBroadcast,
    MaskedInput,
    Message,
    RevealedShare,
    ServerMessage,
    ShareDelivery,
    ShareEnvelope,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)


def message_digest(message: ClientMessage | ServerMessage) -> bytes:
    """32-byte digest of ``encode_message(message)``."""
    return digest(b"message", encode_message(message), label=LABEL_TRANSCRIPT)


def encode_message(message: ClientMessage | ServerMessage) -> bytes:
    """Injective canonical bytes of a typed message (module docstring)."""
    body = _body(message)
    return encode_fields(encode_str(type(message).__name__), *_header(message), *body)


def _header(m: Message) -> tuple[bytes, ...]:
    return (encode_uint(m.version), m.session_id, encode_uint(m.round_index), encode_str(m.sender))


def _ids(sites: Iterable[str]) -> bytes:
    return encode_fields(*(encode_str(s) for s in sites))


def _envelopes(envelopes: Iterable[ShareEnvelope]) -> bytes:
    return encode_fields(
        *(
            encode_fields(encode_str(e.sender), encode_str(e.receiver), e.ciphertext)
            for e in envelopes
        )
    )


def _shares(shares: Iterable[RevealedShare]) -> bytes:
    return encode_fields(
        *(encode_fields(encode_str(s.owner), encode_uint(s.index, size=4), s.value) for s in shares)
    )


def _body(m: ClientMessage | ServerMessage) -> tuple[bytes, ...]:
    """The message's fields after the header, in declaration order."""
    match m:
        case AdvertiseKeys():
            return (m.mask_public, m.encryption_public, m.signature)
        case KeyBroadcast():
            return (encode_fields(*(encode_message(a) for a in m.advertisements)),)
        case ShareKeys():
            return (_envelopes(m.envelopes), m.self_mask_commitment, m.mask_key_commitment)
        case ShareDelivery():
            return (encode_str(m.receiver), _envelopes(m.envelopes))
        case MaskedInput():
            return (np.asarray(m.masked, dtype=">u8").tobytes(),)
        case ConsistencyRequest():
            return (_ids(m.survivors),)
        case ConsistencySignature():
            return (m.signature,)
        case UnmaskRequest():
            signatures = (encode_fields(encode_str(s.site), s.signature) for s in m.signatures)
            return (_ids(m.alive), _ids(m.dropped), encode_fields(*signatures))
        case UnmaskResponse():
            return (_shares(m.self_mask_shares), _shares(m.mask_key_shares))
    raise TypeError(f"not a SecAgg message: {type(m).__name__}")
