"""Typed SecAgg+ messages: the vocabulary of the protocol (h11's ``_events`` ring).

Every message is a frozen keyword-only dataclass carrying the header
(``version``, ``session_id``, ``round_index``, ``sender``) and is checked for
*shape* on construction (types, byte lengths); a malformed value raises
``LocalProtocolError`` (whoever built it misused the API; a wire decoder turns
that into ``RemoteProtocolError`` naming the peer). Whether a well-formed
message is *acceptable* (right session, right stage, no duplicates, valid
signatures) is decided by the sessions in ``client`` and ``server``.

``session_id`` is the round's *setup id* in the two key-advertisement messages
(the keys are not known yet) and the full session id in every later message;
protocol/SPEC.md section 3 defines both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmap_secure.errors import LocalProtocolError

ID_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
MaskedVector = npt.NDArray[np.uint64]


def _require_bytes(name: str, value: object, size: int | None = None) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise LocalProtocolError(f"{name} must be {size} bytes, got {len(value)}")


def _require_int(name: str, value: object, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LocalProtocolError(f"{name} must be an int >= {low}, got {value!r}")


def _require_str(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise LocalProtocolError(f"{name} must be a non-empty str, got {value!r}")


def _require_tuple(name: str, value: object, item_type: type) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, item_type) for v in value):
        raise LocalProtocolError(f"{name} must be a tuple of {item_type.__name__}")


@dataclass(frozen=True, kw_only=True)
class Message:
    """Header common to every message."""

    version: int
    session_id: bytes
    round_index: int
    sender: str

    def __post_init__(self) -> None:
        _require_int("version", self.version, low=1)
        _require_bytes("session_id", self.session_id, ID_SIZE)
        _require_int("round_index", self.round_index)
        _require_str("sender", self.sender)


# ----------------------------------------------------------------------------- parts


@dataclass(frozen=True, kw_only=True)
class ShareEnvelope:
    """Shamir shares from ``sender`` to ``receiver``, sealed under their share-encryption key."""

    sender: str
    receiver: str
    ciphertext: bytes

    def __post_init__(self) -> None:
        _require_str("sender", self.sender)
        _require_str("receiver", self.receiver)
        _require_bytes("ciphertext", self.ciphertext)


@dataclass(frozen=True, kw_only=True)
class RevealedShare:
    """One Shamir share of ``owner``'s self-mask seed or mask private key, revealed at unmask."""

    owner: str
    index: int
    value: bytes = field(repr=False)  # a secret share: never in a repr or a log line

    def __post_init__(self) -> None:
        _require_str("owner", self.owner)
        _require_int("index", self.index, low=1)
        _require_bytes("value", self.value)


@dataclass(frozen=True, kw_only=True)
class SurvivorSignature:
    """``site``'s Ed25519 signature over the consistency payload."""

    site: str
    signature: bytes

    def __post_init__(self) -> None:
        _require_str("site", self.site)
        _require_bytes("signature", self.signature, SIGNATURE_SIZE)


# ----------------------------------------------------------------------------- site -> server


@dataclass(frozen=True, kw_only=True)
class AdvertiseKeys(Message):
    """Stage 1: fresh X25519 public keys, signed with the site's roster identity key."""

    mask_public: bytes
    encryption_public: bytes
    signature: bytes

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_bytes("mask_public", self.mask_public, PUBLIC_KEY_SIZE)
        _require_bytes("encryption_public", self.encryption_public, PUBLIC_KEY_SIZE)
        _require_bytes("signature", self.signature, SIGNATURE_SIZE)


@dataclass(frozen=True, kw_only=True)
class ShareKeys(Message):
    """Stage 2: one sealed envelope per other holder, and commitments to the two shared secrets."""

    envelopes: tuple[ShareEnvelope, ...]
    self_mask_commitment: bytes
    mask_key_commitment: bytes

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_tuple("envelopes", self.envelopes, ShareEnvelope)
        _require_bytes("self_mask_commitment", self.self_mask_commitment)
        _require_bytes("mask_key_commitment", self.mask_key_commitment)


@dataclass(frozen=True, kw_only=True, eq=False)
class MaskedInput(Message):
    """Stage 3: y = x + PRG(b) + sum of +/- PRG(s_uv) in Z_{2^bits}; stored read-only."""

    masked: MaskedVector

    def __post_init__(self) -> None:
        super().__post_init__()
        arr = self.masked
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint64 or arr.ndim != 1:
            raise LocalProtocolError("masked must be a 1-D numpy uint64 array")
        if _immutable(arr):  # e.g. decoded in place from the wire's bytes: kept, not copied
            return
        frozen = arr.copy()
        frozen.flags.writeable = False
        object.__setattr__(self, "masked", frozen)


def _immutable(arr: np.ndarray) -> bool:
    """Whether nobody can write ``arr``'s values: read-only, as is every array it is a view
    of, down to an immutable ``bytes`` buffer (numpy refuses to make such arrays writeable)."""
    base: object = arr
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return isinstance(base, bytes)


@dataclass(frozen=True, kw_only=True)
class ConsistencySignature(Message):
    """Stage 4: the site's signature over (session, survivor set, context digest)."""

    signature: bytes

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_bytes("signature", self.signature, SIGNATURE_SIZE)


@dataclass(frozen=True, kw_only=True)
class UnmaskResponse(Message):
    """Stage 5: self-mask shares of alive owners and mask-key shares of dropped owners."""

    self_mask_shares: tuple[RevealedShare, ...]
    mask_key_shares: tuple[RevealedShare, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_tuple("self_mask_shares", self.self_mask_shares, RevealedShare)
        _require_tuple("mask_key_shares", self.mask_key_shares, RevealedShare)


# ----------------------------------------------------------------------------- server -> site


@dataclass(frozen=True, kw_only=True)
class KeyBroadcast(Message):
    """Stage 1 reply: every advertisement the server accepted (the set U1)."""

    advertisements: tuple[AdvertiseKeys, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_tuple("advertisements", self.advertisements, AdvertiseKeys)


@dataclass(frozen=True, kw_only=True)
class ShareDelivery(Message):
    """Stage 2 reply: the envelopes addressed to ``receiver`` (their senders: U2 as it sees it)."""

    receiver: str
    envelopes: tuple[ShareEnvelope, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_str("receiver", self.receiver)
        _require_tuple("envelopes", self.envelopes, ShareEnvelope)


@dataclass(frozen=True, kw_only=True)
class ConsistencyRequest(Message):
    """Stage 3 reply: the sites whose masked input the server holds (U3), sorted."""

    survivors: tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_tuple("survivors", self.survivors, str)


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest(Message):
    """Stage 4 reply: alive (= U3) and dropped (U2 minus U3) lists, and survivors' signatures."""

    alive: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: tuple[SurvivorSignature, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_tuple("alive", self.alive, str)
        _require_tuple("dropped", self.dropped, str)
        _require_tuple("signatures", self.signatures, SurvivorSignature)


ClientMessage = AdvertiseKeys | ShareKeys | MaskedInput | ConsistencySignature | UnmaskResponse
ServerMessage = KeyBroadcast | ShareDelivery | ConsistencyRequest | UnmaskRequest
CLIENT_MESSAGE_TYPES: tuple[type[Message], ...] = (
    AdvertiseKeys,
    ShareKeys,
    MaskedInput,
    ConsistencySignature,
    UnmaskResponse,
)
SERVER_MESSAGE_TYPES: tuple[type[Message], ...] = (
    KeyBroadcast,
    ShareDelivery,
    ConsistencyRequest,
    UnmaskRequest,
)
