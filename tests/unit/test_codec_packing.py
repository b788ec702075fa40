"""Masked vectors travel packed to their bit width (issue 18): m * bits / 8 bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.secagg import messages as sm
from fedmap_secure.secagg.masking import apply_masks, self_mask_term
from fedmap_secure.transport import bitpack, codec
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

PEER = "site-7"
SID = b"\x05" * 32


def _masked(values: np.ndarray) -> sm.MaskedInput:
    return sm.MaskedInput(version=1, session_id=SID, round_index=2, sender=PEER, masked=values)


def _header() -> pb.Header:
    return pb.Header(version=1, session_id=SID, round=2, sender=PEER)


@pytest.mark.parametrize("bits", [16, 20, 32, 33, 64])
def test_a_masked_vector_takes_at_most_1_05_m_bits_over_8_wire_bytes(bits: int) -> None:
    m = 10_000
    seed = DeterministicRandom(b"mask")(32)
    y = apply_masks(
        np.zeros(m, np.uint64), [self_mask_term(seed, session=SID, site="a")], bits=bits
    )
    message = _masked(y)
    wire = codec.encode_site_message(message).SerializeToString()
    assert len(wire) <= 1.05 * m * bits / 8
    decoded = codec.parse_site_message(wire, peer=PEER)
    assert isinstance(decoded, sm.MaskedInput)
    assert np.array_equal(decoded.masked, y)
    assert codec.encode_site_message(message).masked_input.value_bits == bits


def test_the_unpacked_8_byte_encoding_is_still_accepted() -> None:
    values = np.array([1, 2**63, 7], np.uint64)
    proto = spb.SiteMessage(
        masked_input=pb.MaskedInput(header=_header(), masked=values.astype("<u8").tobytes())
    )
    decoded = codec.parse_site_message(proto.SerializeToString(), peer=PEER)
    assert isinstance(decoded, sm.MaskedInput)
    assert np.array_equal(decoded.masked, values)


@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_unpacked_words_never_follow_a_mutable_buffer(width: int) -> None:
    values = np.array([1, 2, 2**width - 1], np.uint64)
    wire = bitpack.pack(values, width)
    from_bytes = bitpack.unpack(wire, width, 3)
    assert not from_bytes.flags.writeable or from_bytes.flags.owndata
    buffer = bytearray(wire)
    from_buffer = bitpack.unpack(buffer, width, 3)  # type: ignore[arg-type]
    buffer[:] = bytes(len(buffer))
    assert from_bytes.tolist() == from_buffer.tolist() == values.tolist()


def test_the_8_byte_encoding_never_follows_a_mutable_buffer() -> None:
    buffer = bytearray(np.array([5, 6], "<u8").tobytes())
    decoded = codec.decode_vector(buffer, peer=PEER)  # type: ignore[arg-type]
    buffer[:] = bytes(len(buffer))
    assert decoded.tolist() == [5, 6]
    assert not codec.decode_vector(bytes(buffer), peer=PEER).flags.writeable  # a view of bytes


@pytest.mark.parametrize(
    ("data", "bits", "count", "match"),
    [
        (b"\x00\x00", 65, 1, "outside 1..64"),
        (b"\x00" * 3, 12, 3, "do not hold 3 values of 12 bits"),
        (b"\x00\xf0", 12, 1, "non-zero padding"),
        (b"", 12, 0, "empty"),
        (b"\x00" * 16, 0, 2, "value_count is set"),
    ],
)
def test_malformed_packed_vectors_name_the_peer(
    data: bytes, bits: int, count: int, match: str
) -> None:
    proto = spb.SiteMessage(
        masked_input=pb.MaskedInput(
            header=_header(), masked=data, value_bits=bits, value_count=count
        )
    )
    with pytest.raises(RemoteProtocolError, match=match) as info:
        codec.parse_site_message(proto.SerializeToString(), peer=PEER)
    assert info.value.peer == PEER


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 64), data=st.data())
def test_pack_then_unpack_is_the_identity(width: int, data: st.DataObject) -> None:
    top = (1 << width) - 1
    values = data.draw(st.lists(st.integers(0, top), min_size=0, max_size=40))
    array = np.array(values, dtype=np.uint64)
    packed = bitpack.pack(array, width)
    assert len(packed) == (len(values) * width + 7) // 8
    assert np.array_equal(bitpack.unpack(packed, width, len(values)), array)


def test_pack_refuses_values_wider_than_the_width() -> None:
    with pytest.raises(ValueError, match="does not fit in 12 bits"):
        bitpack.pack(np.array([1 << 12], np.uint64), 12)


def test_packing_is_lsb_first_little_endian() -> None:
    assert bitpack.pack(np.array([1, 2, 3], np.uint64), 3) == bytes([0b11010001, 0b0])
