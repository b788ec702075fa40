"""Malformed wire input becomes RemoteProtocolError naming the peer, never another exception."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.secagg import messages as sm
from fedmap_secure.transport import codec
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

PEER = "site-7"
SID = b"\x05" * 32


def _header(**overrides: object) -> pb.Header:
    fields: dict[str, object] = {"version": 1, "session_id": SID, "round": 2, "sender": PEER}
    fields.update(overrides)
    return pb.Header(**fields)  # type: ignore[arg-type]


def _refused(proto: spb.SiteMessage, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        codec.parse_site_message(proto.SerializeToString(), peer=PEER)
    assert info.value.peer == PEER
    assert PEER in str(info.value)


def _signature(**header: object) -> spb.SiteMessage:
    sig = pb.ConsistencySignature(header=_header(**header), signature=b"\x01" * 64)
    return spb.SiteMessage(consistency_signature=sig)


def test_well_formed_reference_message_is_accepted() -> None:
    message = codec.parse_site_message(_signature().SerializeToString(), peer=PEER)
    assert isinstance(message, sm.ConsistencySignature)


@pytest.mark.parametrize(
    "data", [b"\xff\xff\xff\xff", b"\x0a\x05ab", bytes(range(256)), b"\x08" * 11]
)
def test_garbage_bytes(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        codec.parse_site_message(data, peer=PEER)
    assert info.value.peer == PEER


def test_empty_message_has_no_body() -> None:
    _refused(spb.SiteMessage(), "no body")


def test_unknown_oneof_member_from_a_newer_peer() -> None:
    unknown_field_99 = b"\x9a\x06\x02\x08\x01"  # field 99, length-delimited
    with pytest.raises(RemoteProtocolError, match="no body"):
        codec.parse_site_message(unknown_field_99, peer=PEER)


def test_missing_header() -> None:
    sig = pb.ConsistencySignature(signature=b"\x01" * 64)
    _refused(spb.SiteMessage(consistency_signature=sig), "has no header")


@pytest.mark.parametrize("version", [0, 2, 999])
def test_wrong_version(version: int) -> None:
    _refused(_signature(version=version), f"protocol version {version} unsupported")


def test_short_session_id() -> None:
    _refused(_signature(session_id=b"\x05" * 31), "session_id must be 32 bytes")


def test_empty_sender() -> None:
    _refused(_signature(sender=""), "sender")


def test_wrong_signature_length() -> None:
    sig = pb.ConsistencySignature(header=_header(), signature=b"\x01" * 63)
    _refused(spb.SiteMessage(consistency_signature=sig), "signature must be 64 bytes")


def test_wrong_public_key_length() -> None:
    ad = pb.AdvertiseKeys(
        header=_header(),
        mask_public=b"\x01" * 31,
        encryption_public=b"\x02" * 32,
        signature=b"\x03" * 64,
    )
    _refused(spb.SiteMessage(advertise_keys=ad), "mask_public must be 32 bytes")


@pytest.mark.parametrize("size", [1, 7, 15, 8 * 5 - 3])
def test_truncated_vector(size: int) -> None:
    masked = pb.MaskedInput(header=_header(), masked=b"\x01" * size)
    _refused(spb.SiteMessage(masked_input=masked), "not a whole number of 8-byte values")


def test_empty_vector() -> None:
    _refused(spb.SiteMessage(masked_input=pb.MaskedInput(header=_header())), "vector is empty")


@pytest.mark.parametrize("reason", [0, 4, 77])
def test_unknown_or_unspecified_enum(reason: int) -> None:
    decline = pb.Decline(header=_header(), reason=reason)  # type: ignore[arg-type]
    _refused(spb.SiteMessage(decline=decline), "DeclineReason value")


def test_share_index_zero() -> None:
    share = pb.RevealedShare(owner="s1", index=0, value=b"\x01")
    response = pb.UnmaskResponse(header=_header(), self_mask_shares=[share])
    _refused(spb.SiteMessage(unmask_response=response), "malformed RevealedShare")


def test_envelope_without_receiver() -> None:
    env = pb.ShareEnvelope(sender=PEER, receiver="", ciphertext=b"x")
    keys = pb.ShareKeys(header=_header(), envelopes=[env])
    _refused(spb.SiteMessage(share_keys=keys), "malformed ShareEnvelope")


def _server_refused(proto: spb.ServerMessage, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        codec.parse_server_message(proto.SerializeToString(), peer="@server")
    assert info.value.peer == "@server"


def test_setup_with_bad_layout() -> None:
    base = {"header": _header(sender="@server"), "config_digest": SID, "roster_digest": SID}
    cases = [
        ([], "layout has no fields"),
        ([pb.LayoutField(name="a", length=0, bound=1.0)], "length must be >= 1"),
        ([pb.LayoutField(name="a", length=1, bound=float("nan"))], "bound must be finite"),
        ([pb.LayoutField(name="not id", length=1, bound=1.0)], "not an identifier"),
        ([pb.LayoutField(name="a", length=1, bound=1.0)] * 2, "duplicate field"),
    ]
    for fields, match in cases:
        setup = pb.SecAggSetup(**base, layout=fields, stage_timeout_ms=10)  # type: ignore[arg-type]
        _server_refused(spb.ServerMessage(secagg_setup=setup), match)


def test_setup_with_zero_timeout() -> None:
    setup = pb.SecAggSetup(
        header=_header(sender="@server"),
        layout=[pb.LayoutField(name="a", length=1, bound=1.0)],
        config_digest=SID,
        roster_digest=SID,
    )
    _server_refused(spb.ServerMessage(secagg_setup=setup), "stage_timeout_ms")


def test_outcome_with_unsorted_contributors_and_bad_status() -> None:
    unsorted = pb.RoundOutcome(
        header=_header(sender="@server"), status=pb.ROUND_STATUS_COMPLETED, contributors=["b", "a"]
    )
    _server_refused(spb.ServerMessage(round_outcome=unsorted), "sorted")
    bad = pb.RoundOutcome(header=_header(sender="@server"), status=pb.ROUND_STATUS_UNSPECIFIED)
    _server_refused(spb.ServerMessage(round_outcome=bad), "RoundStatus")


def test_join_request_checks() -> None:
    with pytest.raises(RemoteProtocolError, match="no header"):
        codec.decode_join(spb.JoinRequest(), peer=PEER)
    with pytest.raises(RemoteProtocolError, match="must not carry a session id"):
        codec.decode_join(spb.JoinRequest(header=_header()), peer=PEER)
    with pytest.raises(RemoteProtocolError, match="version 5"):
        codec.decode_join(spb.JoinRequest(header=_header(session_id=b"", version=5)), peer=PEER)


def test_decode_vector_is_little_endian() -> None:
    data = (1).to_bytes(8, "little") + (2**63).to_bytes(8, "little")
    assert np.array_equal(codec.decode_vector(data, peer=PEER), np.array([1, 2**63], np.uint64))
