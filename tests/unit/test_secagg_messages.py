"""Message constructors check shape and freeze their contents."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedmap_secure.errors import LocalProtocolError
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    MaskedInput,
    RevealedShare,
    ShareEnvelope,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
)

HEADER = {"version": 1, "session_id": bytes(32), "round_index": 0, "sender": "s0"}


def _ad(**changes: object) -> AdvertiseKeys:
    fields: dict[str, object] = {
        **HEADER,
        "mask_public": bytes(32),
        "encryption_public": bytes(32),
        "signature": bytes(64),
    }
    fields.update(changes)
    return AdvertiseKeys(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"version": 0},
        {"version": True},
        {"session_id": bytes(31)},
        {"session_id": "x" * 32},
        {"round_index": -1},
        {"sender": ""},
        {"sender": 5},
        {"mask_public": bytes(33)},
        {"encryption_public": None},
        {"signature": bytes(63)},
    ],
)
def test_header_and_fields_are_validated(changes: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        _ad(**changes)


def test_nested_parts_are_validated() -> None:
    with pytest.raises(LocalProtocolError):
        ShareEnvelope(sender="a", receiver="", ciphertext=b"")
    with pytest.raises(LocalProtocolError):
        RevealedShare(owner="a", index=0, value=b"")
    with pytest.raises(LocalProtocolError):
        SurvivorSignature(site="a", signature=b"short")
    with pytest.raises(LocalProtocolError, match="tuple of ShareEnvelope"):
        ShareKeys(
            **HEADER,  # type: ignore[arg-type]
            envelopes=[ShareEnvelope(sender="a", receiver="b", ciphertext=b"")],  # type: ignore[arg-type]
            self_mask_commitment=b"",
            mask_key_commitment=b"",
        )
    with pytest.raises(LocalProtocolError, match="tuple of str"):
        ConsistencyRequest(**HEADER, survivors=("a", 3))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        UnmaskRequest(**HEADER, alive=("a",), dropped=(), signatures=("sig",))  # type: ignore[arg-type]


def test_masked_input_is_a_read_only_copy() -> None:
    source = np.arange(4, dtype=np.uint64)
    message = MaskedInput(**HEADER, masked=source)  # type: ignore[arg-type]
    source[0] = 99
    assert message.masked[0] == 0
    with pytest.raises(ValueError, match="read-only"):
        message.masked[0] = 1
    with pytest.raises(LocalProtocolError):
        MaskedInput(**HEADER, masked=np.zeros(4, dtype=np.int64))  # type: ignore[arg-type]


def test_masked_input_copies_a_read_only_view_of_a_writable_array() -> None:
    source = np.arange(4, dtype=np.uint64)
    view = source[:]
    view.flags.writeable = False
    message = MaskedInput(**HEADER, masked=view)  # type: ignore[arg-type]
    source[0] = 99  # the holder of the base can still write: the message kept a copy
    assert message.masked[0] == 0


def test_masked_input_keeps_an_array_over_immutable_bytes_without_a_copy() -> None:
    wire = np.arange(5, dtype="<u8").tobytes()
    decoded = np.frombuffer(wire, dtype="<u8")[1:]  # a view of a view of bytes
    message = MaskedInput(**HEADER, masked=decoded)  # type: ignore[arg-type]
    assert message.masked is decoded
    assert message.masked.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="WRITEABLE"):
        message.masked.flags.writeable = True


def test_messages_are_frozen() -> None:
    ad = _ad()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ad.sender = "s1"  # type: ignore[misc]
