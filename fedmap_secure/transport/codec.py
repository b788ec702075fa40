"""The one mapping between protobuf (``generated/v1``) and the typed protocol messages.

``encode_*`` turn typed messages into protobuf; ``decode_*`` and ``parse_*`` go
back and *validate*: any malformed input (undecodable bytes, a missing header or
body, the wrong protocol version, a wrong byte length, a vector that is not a
whole number of 8-byte values, an unknown or unspecified enum value) raises
``RemoteProtocolError`` naming ``peer``, the authenticated party the bytes came
from. Besides this module only ``framing`` (frames), ``rpc`` (the service
binding) and the drivers (frame and ack objects) touch generated code.

Vector encoding (SPEC section 5): ``MaskedInput.masked`` is the m values
packed at ``value_bits`` = w bits each (``bitpack``; w is the bit length of the
largest value, which for a masked vector, uniform in Z_{2^bits}, is ``bits``),
so it takes m * bits / 8 bytes; ``value_bits = 0`` (the earlier encoding) means
m little-endian unsigned 8-byte integers and is still accepted. FedMAP's gamma
and psi are little-endian IEEE-754 binary64 values, concatenated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import Field, FloatVector, VectorLayout
from fedmap_secure.errors import ConfigError, LocalProtocolError, RemoteProtocolError
from fedmap_secure.secagg import messages as sm
from fedmap_secure.transport import bitpack
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.generated.v1 import fedmap_pb2 as fpb
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

SiteWireMessage = sm.ClientMessage | tm.Decline
ServerWireMessage = sm.ServerMessage | tm.SecAggSetup | tm.FedMapRound | tm.RoundOutcome
T = TypeVar("T")

_DECLINE = {
    tm.DeclineReason.BUDGET_EXHAUSTED: pb.DECLINE_REASON_BUDGET_EXHAUSTED,
    tm.DeclineReason.NO_DATA: pb.DECLINE_REASON_NO_DATA,
    tm.DeclineReason.OPERATOR: pb.DECLINE_REASON_OPERATOR,
}
_STATUS = {
    tm.RoundStatus.COMPLETED: pb.ROUND_STATUS_COMPLETED,
    tm.RoundStatus.ABORTED: pb.ROUND_STATUS_ABORTED,
}


# ----------------------------------------------------------------------------- header


def encode_header(message: sm.Message) -> pb.Header:
    return pb.Header(
        version=message.version,
        session_id=message.session_id,
        round=message.round_index,
        sender=message.sender,
    )


def _header_fields(proto: pb.Header, *, peer: str) -> dict[str, object]:
    if proto.version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            peer,
            f"protocol version {proto.version} unsupported (this peer speaks {PROTOCOL_VERSION})",
        )
    return {
        "version": proto.version,
        "session_id": proto.session_id,
        "round_index": proto.round,
        "sender": proto.sender,
    }


def _header(present: bool, proto: pb.Header, *, peer: str, what: str) -> dict[str, object]:
    """The header kwargs of a message that must carry one (``present``: HasField("header"))."""
    if not present:
        raise RemoteProtocolError(peer, f"{what} has no header")
    return _header_fields(proto, peer=peer)


def _build(peer: str, what: str, make: Callable[..., T], /, **kwargs: object) -> T:
    """Call a typed constructor; its shape errors become the peer's protocol errors."""
    try:
        return make(**kwargs)
    except (LocalProtocolError, ConfigError, ValueError, TypeError, OverflowError) as exc:
        raise RemoteProtocolError(peer, f"malformed {what}: {exc}") from None


# ----------------------------------------------------------------------------- vectors


def encode_vector(values: sm.MaskedVector) -> bytes:
    """m values as little-endian unsigned 8-byte integers."""
    return np.ascontiguousarray(values, dtype="<u8").tobytes()


def packed_vector(values: sm.MaskedVector) -> tuple[bytes, int]:
    """(packed bytes, w): the values at w = the bit length of the largest (at least 1).

    The width is a function of the values alone, which the receiver learns
    anyway, so it reveals nothing more; for a masked vector it is ``bits``
    except with probability 2^-m.
    """
    width = max(1, int(values.max()).bit_length()) if values.size else 1
    return bitpack.pack(np.ascontiguousarray(values, dtype=np.uint64), width), width


def unpacked_vector(data: bytes, *, width: int, count: int, peer: str) -> sm.MaskedVector:
    """Inverse of ``packed_vector``; ``width = 0`` is the 8-byte encoding (``decode_vector``)."""
    if width == 0:
        if count:
            raise RemoteProtocolError(peer, "value_count is set but value_bits is not")
        return decode_vector(data, peer=peer)
    if not 1 <= width <= 64:
        raise RemoteProtocolError(peer, f"value_bits {width} is outside 1..64")
    if count < 1:
        raise RemoteProtocolError(peer, "vector is empty")
    try:
        return bitpack.unpack(data, width, count)
    except ValueError as exc:
        raise RemoteProtocolError(peer, f"packed vector rejected: {exc}") from None


def decode_vector(data: bytes, *, peer: str) -> sm.MaskedVector:
    if len(data) % 8:
        raise RemoteProtocolError(
            peer, f"vector of {len(data)} bytes is not a whole number of 8-byte values (truncated?)"
        )
    if not data:
        raise RemoteProtocolError(peer, "vector is empty")
    # from ``bytes``: a read-only view, no copy (bytes are immutable)
    return np.frombuffer(data, dtype="<u8").astype(np.uint64, copy=not isinstance(data, bytes))


def encode_floats(values: FloatVector) -> bytes:
    """float64 values as little-endian binary64, concatenated."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def decode_floats(data: bytes, *, peer: str, what: str) -> FloatVector:
    if len(data) % 8:
        raise RemoteProtocolError(
            peer, f"{what} of {len(data)} bytes is not a whole number of float64 values"
        )
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


# ----------------------------------------------------------------------------- parts


def _envelopes(items: Iterable[pb.ShareEnvelope], *, peer: str) -> tuple[sm.ShareEnvelope, ...]:
    return tuple(
        _build(
            peer,
            "ShareEnvelope",
            sm.ShareEnvelope,
            sender=e.sender,
            receiver=e.receiver,
            ciphertext=e.ciphertext,
        )
        for e in items
    )


def _encode_envelopes(items: Iterable[sm.ShareEnvelope]) -> list[pb.ShareEnvelope]:
    return [
        pb.ShareEnvelope(sender=e.sender, receiver=e.receiver, ciphertext=e.ciphertext)
        for e in items
    ]


def _shares(items: Iterable[pb.RevealedShare], *, peer: str) -> tuple[sm.RevealedShare, ...]:
    return tuple(
        _build(peer, "RevealedShare", sm.RevealedShare, owner=s.owner, index=s.index, value=s.value)
        for s in items
    )


def _encode_shares(items: Iterable[sm.RevealedShare]) -> list[pb.RevealedShare]:
    return [pb.RevealedShare(owner=s.owner, index=s.index, value=s.value) for s in items]


def encode_layout(layout: VectorLayout) -> list[pb.LayoutField]:
    return [pb.LayoutField(name=f.name, length=f.length, bound=f.bound) for f in layout.fields]


def decode_layout(items: Iterable[pb.LayoutField], *, peer: str) -> VectorLayout:
    fields = tuple(
        _build(peer, "layout field", Field, name=f.name, length=f.length, bound=f.bound)
        for f in items
    )
    if not fields:
        raise RemoteProtocolError(peer, "layout has no fields")
    return _build(peer, "layout", VectorLayout, fields=fields)


def _enum(value: int, table: Mapping[T, int], *, peer: str, what: str) -> T:
    for typed, wire in table.items():
        if wire == value:
            return typed
    raise RemoteProtocolError(peer, f"unknown or unspecified {what} value {value}")


# ----------------------------------------------------------------------------- stage messages


def _encode_advertise(m: sm.AdvertiseKeys) -> pb.AdvertiseKeys:
    return pb.AdvertiseKeys(
        header=encode_header(m),
        mask_public=m.mask_public,
        encryption_public=m.encryption_public,
        signature=m.signature,
    )


def _decode_advertise(p: pb.AdvertiseKeys, *, peer: str) -> sm.AdvertiseKeys:
    return _build(
        peer,
        "AdvertiseKeys",
        sm.AdvertiseKeys,
        **_header(p.HasField("header"), p.header, peer=peer, what="AdvertiseKeys"),
        mask_public=p.mask_public,
        encryption_public=p.encryption_public,
        signature=p.signature,
    )


def encode_site_message(message: SiteWireMessage) -> spb.SiteMessage:
    """Typed site message -> protobuf ``SiteMessage``."""
    h = encode_header(message)
    if isinstance(message, sm.AdvertiseKeys):
        return spb.SiteMessage(advertise_keys=_encode_advertise(message))
    if isinstance(message, sm.ShareKeys):
        return spb.SiteMessage(
            share_keys=pb.ShareKeys(
                header=h,
                envelopes=_encode_envelopes(message.envelopes),
                self_mask_commitment=message.self_mask_commitment,
                mask_key_commitment=message.mask_key_commitment,
            )
        )
    if isinstance(message, sm.MaskedInput):
        data, width = packed_vector(message.masked)
        masked = pb.MaskedInput(
            header=h, masked=data, value_bits=width, value_count=message.masked.size
        )
        return spb.SiteMessage(masked_input=masked)
    if isinstance(message, sm.ConsistencySignature):
        sig = pb.ConsistencySignature(header=h, signature=message.signature)
        return spb.SiteMessage(consistency_signature=sig)
    if isinstance(message, sm.UnmaskResponse):
        return spb.SiteMessage(
            unmask_response=pb.UnmaskResponse(
                header=h,
                self_mask_shares=_encode_shares(message.self_mask_shares),
                mask_key_shares=_encode_shares(message.mask_key_shares),
            )
        )
    return spb.SiteMessage(decline=pb.Decline(header=h, reason=_DECLINE[message.reason]))


def decode_site_message(proto: spb.SiteMessage, *, peer: str) -> SiteWireMessage:
    """Protobuf ``SiteMessage`` -> typed message, or ``RemoteProtocolError`` naming ``peer``."""
    kind = proto.WhichOneof("body")
    if kind == "advertise_keys":
        return _decode_advertise(proto.advertise_keys, peer=peer)
    if kind == "share_keys":
        p = proto.share_keys
        return _build(
            peer,
            "ShareKeys",
            sm.ShareKeys,
            **_header(p.HasField("header"), p.header, peer=peer, what="ShareKeys"),
            envelopes=_envelopes(p.envelopes, peer=peer),
            self_mask_commitment=p.self_mask_commitment,
            mask_key_commitment=p.mask_key_commitment,
        )
    if kind == "masked_input":
        q = proto.masked_input
        header = _header(q.HasField("header"), q.header, peer=peer, what="MaskedInput")
        masked = unpacked_vector(q.masked, width=q.value_bits, count=q.value_count, peer=peer)
        return _build(peer, "MaskedInput", sm.MaskedInput, **header, masked=masked)
    if kind == "consistency_signature":
        c = proto.consistency_signature
        header = _header(c.HasField("header"), c.header, peer=peer, what="ConsistencySignature")
        return _build(
            peer, "ConsistencySignature", sm.ConsistencySignature, **header, signature=c.signature
        )
    if kind == "unmask_response":
        u = proto.unmask_response
        return _build(
            peer,
            "UnmaskResponse",
            sm.UnmaskResponse,
            **_header(u.HasField("header"), u.header, peer=peer, what="UnmaskResponse"),
            self_mask_shares=_shares(u.self_mask_shares, peer=peer),
            mask_key_shares=_shares(u.mask_key_shares, peer=peer),
        )
    if kind == "decline":
        d = proto.decline
        header = _header(d.HasField("header"), d.header, peer=peer, what="Decline")
        reason = _enum(d.reason, _DECLINE, peer=peer, what="DeclineReason")
        return _build(peer, "Decline", tm.Decline, **header, reason=reason)
    raise RemoteProtocolError(peer, "site message has no body (unknown message type?)")


def _encode_setup(message: tm.SecAggSetup) -> pb.SecAggSetup:
    return pb.SecAggSetup(
        header=encode_header(message),
        layout=encode_layout(message.layout),
        context=message.context,
        config_digest=message.config_digest,
        roster_digest=message.roster_digest,
        stage_timeout_ms=message.stage_timeout_ms,
        previous_transcript_hash=message.previous_transcript_hash,
    )


def _decode_setup(s: pb.SecAggSetup, *, peer: str) -> tm.SecAggSetup:
    return _build(
        peer,
        "SecAggSetup",
        tm.SecAggSetup,
        **_header(s.HasField("header"), s.header, peer=peer, what="SecAggSetup"),
        layout=decode_layout(s.layout, peer=peer),
        context=s.context,
        config_digest=s.config_digest,
        roster_digest=s.roster_digest,
        stage_timeout_ms=s.stage_timeout_ms,
        previous_transcript_hash=s.previous_transcript_hash,
    )


def _encode_fedmap(message: tm.FedMapRound) -> fpb.FedMapRound:
    proto = fpb.FedMapRound(
        header=encode_header(message),
        gamma=encode_floats(message.gamma),
        has_psi=message.psi is not None,
        psi=b"" if message.psi is None else encode_floats(message.psi),
        config_json=message.config_json,
        final=message.final,
    )
    if message.setup is not None:
        proto.secagg.CopyFrom(_encode_setup(message.setup))
    return proto


def _decode_fedmap(f: fpb.FedMapRound, *, peer: str) -> tm.FedMapRound:
    header = _header(f.HasField("header"), f.header, peer=peer, what="FedMapRound")
    if f.psi and not f.has_psi:
        raise RemoteProtocolError(peer, "FedMapRound carries psi but has_psi is false")
    return _build(
        peer,
        "FedMapRound",
        tm.FedMapRound,
        **header,
        gamma=decode_floats(f.gamma, peer=peer, what="gamma"),
        psi=decode_floats(f.psi, peer=peer, what="psi") if f.has_psi else None,
        config_json=f.config_json,
        setup=_decode_setup(f.secagg, peer=peer) if f.HasField("secagg") else None,
        final=f.final,
    )


def encode_server_message(message: ServerWireMessage) -> spb.ServerMessage:
    """Typed server message -> protobuf ``ServerMessage``."""
    h = encode_header(message)
    if isinstance(message, tm.SecAggSetup):
        return spb.ServerMessage(secagg_setup=_encode_setup(message))
    if isinstance(message, tm.FedMapRound):
        return spb.ServerMessage(fedmap_round=_encode_fedmap(message))
    if isinstance(message, sm.KeyBroadcast):
        ads = [_encode_advertise(a) for a in message.advertisements]
        return spb.ServerMessage(key_broadcast=pb.KeyBroadcast(header=h, advertisements=ads))
    if isinstance(message, sm.ShareDelivery):
        envelopes = _encode_envelopes(message.envelopes)
        delivery = pb.ShareDelivery(header=h, receiver=message.receiver, envelopes=envelopes)
        return spb.ServerMessage(share_delivery=delivery)
    if isinstance(message, sm.ConsistencyRequest):
        request = pb.ConsistencyRequest(header=h, survivors=list(message.survivors))
        return spb.ServerMessage(consistency_request=request)
    if isinstance(message, sm.UnmaskRequest):
        sigs = [
            pb.SurvivorSignature(site=s.site, signature=s.signature) for s in message.signatures
        ]
        unmask = pb.UnmaskRequest(
            header=h, alive=list(message.alive), dropped=list(message.dropped), signatures=sigs
        )
        return spb.ServerMessage(unmask_request=unmask)
    outcome = pb.RoundOutcome(
        header=h,
        status=_STATUS[message.status],
        contributors=list(message.contributors),
        detail=message.detail,
    )
    return spb.ServerMessage(round_outcome=outcome)


def decode_server_message(proto: spb.ServerMessage, *, peer: str) -> ServerWireMessage:
    """Protobuf ``ServerMessage`` -> typed message, or ``RemoteProtocolError`` naming ``peer``."""
    kind = proto.WhichOneof("body")
    if kind == "secagg_setup":
        return _decode_setup(proto.secagg_setup, peer=peer)
    if kind == "fedmap_round":
        return _decode_fedmap(proto.fedmap_round, peer=peer)
    if kind == "key_broadcast":
        k = proto.key_broadcast
        header = _header(k.HasField("header"), k.header, peer=peer, what="KeyBroadcast")
        ads = tuple(_decode_advertise(a, peer=peer) for a in k.advertisements)
        return _build(peer, "KeyBroadcast", sm.KeyBroadcast, **header, advertisements=ads)
    if kind == "share_delivery":
        d = proto.share_delivery
        return _build(
            peer,
            "ShareDelivery",
            sm.ShareDelivery,
            **_header(d.HasField("header"), d.header, peer=peer, what="ShareDelivery"),
            receiver=d.receiver,
            envelopes=_envelopes(d.envelopes, peer=peer),
        )
    if kind == "consistency_request":
        c = proto.consistency_request
        header = _header(c.HasField("header"), c.header, peer=peer, what="ConsistencyRequest")
        survivors = tuple(c.survivors)
        return _build(
            peer, "ConsistencyRequest", sm.ConsistencyRequest, **header, survivors=survivors
        )
    if kind == "unmask_request":
        return _decode_unmask_request(proto.unmask_request, peer=peer)
    if kind == "round_outcome":
        o = proto.round_outcome
        return _build(
            peer,
            "RoundOutcome",
            tm.RoundOutcome,
            **_header(o.HasField("header"), o.header, peer=peer, what="RoundOutcome"),
            status=_enum(o.status, _STATUS, peer=peer, what="RoundStatus"),
            contributors=tuple(o.contributors),
            detail=o.detail,
        )
    raise RemoteProtocolError(peer, "server message has no body (unknown message type?)")


def _decode_unmask_request(u: pb.UnmaskRequest, *, peer: str) -> sm.UnmaskRequest:
    signatures = tuple(
        _build(peer, "SurvivorSignature", sm.SurvivorSignature, site=s.site, signature=s.signature)
        for s in u.signatures
    )
    return _build(
        peer,
        "UnmaskRequest",
        sm.UnmaskRequest,
        **_header(u.HasField("header"), u.header, peer=peer, what="UnmaskRequest"),
        alive=tuple(u.alive),
        dropped=tuple(u.dropped),
        signatures=signatures,
    )


# ----------------------------------------------------------------------------- join, bytes


def encode_join(request: tm.JoinRequest) -> spb.JoinRequest:
    header = pb.Header(version=request.version, round=request.round_index, sender=request.sender)
    return spb.JoinRequest(header=header)


def _request_header(
    proto: spb.JoinRequest | spb.FetchFinalRequest, *, peer: str, what: str
) -> pb.Header:
    """The checked header of a request that carries nothing else."""
    if not proto.HasField("header"):
        raise RemoteProtocolError(peer, f"{what} has no header")
    _header_fields(proto.header, peer=peer)
    return proto.header


def decode_join(proto: spb.JoinRequest, *, peer: str) -> tm.JoinRequest:
    h = _request_header(proto, peer=peer, what="JoinRequest")
    if h.session_id:
        raise RemoteProtocolError(peer, "JoinRequest must not carry a session id")
    return _build(
        peer, "JoinRequest", tm.JoinRequest, version=h.version, round_index=h.round, sender=h.sender
    )


def encode_fetch_final(request: tm.FetchFinal) -> spb.FetchFinalRequest:
    header = pb.Header(version=request.version, round=0, sender=request.sender)
    return spb.FetchFinalRequest(header=header)


def decode_fetch_final(proto: spb.FetchFinalRequest, *, peer: str) -> tm.FetchFinal:
    h = _request_header(proto, peer=peer, what="FetchFinalRequest")
    if h.session_id or h.round:
        raise RemoteProtocolError(peer, "FetchFinalRequest must carry round 0 and no session id")
    return _build(peer, "FetchFinalRequest", tm.FetchFinal, version=h.version, sender=h.sender)


def parse_site_message(data: bytes, *, peer: str) -> SiteWireMessage:
    """Serialized ``SiteMessage`` bytes -> typed message (garbage -> ``RemoteProtocolError``)."""
    proto = spb.SiteMessage()
    _parse_into(proto, data, peer=peer, what="SiteMessage")
    return decode_site_message(proto, peer=peer)


def parse_server_message(data: bytes, *, peer: str) -> ServerWireMessage:
    """Serialized ``ServerMessage`` bytes -> typed message (garbage -> ``RemoteProtocolError``)."""
    proto = spb.ServerMessage()
    _parse_into(proto, data, peer=peer, what="ServerMessage")
    return decode_server_message(proto, peer=peer)


def _parse_into(
    proto: spb.SiteMessage | spb.ServerMessage, data: bytes, *, peer: str, what: str
) -> None:
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise RemoteProtocolError(peer, f"undecodable {what} ({len(data)} bytes): {exc}") from None
