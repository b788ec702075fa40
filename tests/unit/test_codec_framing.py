"""Chunked framing: strict reassembly of frames into messages."""

from __future__ import annotations

import pytest

from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.transport import framing
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

H = pb.Header(version=1, session_id=b"\x01" * 32, round=4, sender="s1")
DATA = bytes(range(256)) * 10


def _frames(data: bytes = DATA, chunk: int = 1000) -> list[spb.Frame]:
    return framing.split(data, H, chunk_size=chunk)


def test_split_sizes_and_reassembly() -> None:
    frames = _frames()
    assert [len(f.data) for f in frames] == [1000, 1000, 560]
    assert {(f.count, f.total_size) for f in frames} == {(3, len(DATA))}
    assert framing.read_one(frames, peer="s1") == (H, DATA)


def test_empty_message_is_one_frame() -> None:
    frames = framing.split(b"", H)
    assert len(frames) == 1
    assert framing.read_one(frames, peer="s1") == (H, b"")


def test_several_messages_on_one_stream() -> None:
    stream = _frames(b"a" * 10, 3) + _frames(b"b" * 5, 3)
    assert [d for _, d in framing.read_messages(stream, peer="@server")] == [b"a" * 10, b"b" * 5]


def _refused(frames: list[spb.Frame], match: str, max_bytes: int = 10_000) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        framing.read_one(frames, peer="s1", max_bytes=max_bytes)
    assert info.value.peer == "s1"


def test_missing_last_frame() -> None:
    _refused(_frames()[:2], "stream ended after 2 of 3 frames")


def test_out_of_order() -> None:
    f = _frames()
    _refused([f[0], f[2], f[1]], "out of sequence")


def test_starts_mid_message() -> None:
    _refused(_frames()[1:], "starts at frame 1")


def test_duplicate_frame() -> None:
    f = _frames()
    _refused([f[0], f[0], f[1], f[2]], "out of sequence")


def test_extra_message_in_submit() -> None:
    _refused(_frames() + _frames(), "more than one message")


def test_no_frames() -> None:
    _refused([], "no message")


def test_oversized_announced_before_buffering() -> None:
    with pytest.raises(framing.OversizedMessageError, match="exceeds the limit of 100"):
        framing.read_one(_frames()[:1], peer="s1", max_bytes=100)


def test_lying_total_size() -> None:
    f = _frames()
    for frame in f:
        frame.total_size = 100
    _refused(f, "frame count 3 impossible|more than 100 bytes")
    g = _frames(DATA, 5000)
    g[0].total_size = len(DATA) + 1
    _refused(g, "announced")


def test_header_changes_mid_message() -> None:
    f = _frames()
    f[1].header.round = 5
    _refused(f, "different header")


def test_bad_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        framing.split(b"x", H, chunk_size=0)
