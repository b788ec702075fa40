"""Chunked framing: one serialized message as a sequence of ``Frame`` (service.proto).

A sender cuts the serialized ``SiteMessage``/``ServerMessage`` into slices of at
most ``chunk_size`` bytes (default 1 MiB, well below gRPC's default 4 MiB
per-message limit), each frame repeating the message's header, its position,
the number of frames and the total size. A receiver reassembles strictly: frames
in order, consistent count, size and header, nothing missing or extra, and the
declared size no larger than its own ``max_bytes`` (checked on the first frame,
before buffering anything). Violations raise ``RemoteProtocolError`` naming the
peer; ``OversizedMessageError`` (a subclass) for a message above the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 256 << 20


class OversizedMessageError(RemoteProtocolError):
    """A peer announced or sent a message larger than the receiver accepts."""


def split(
    data: bytes, header: pb.Header, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[spb.Frame]:
    """The frames carrying ``data`` (at least one, even when ``data`` is empty)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    count = max(1, -(-len(data) // chunk_size))
    return [
        spb.Frame(
            header=header,
            index=i,
            count=count,
            total_size=len(data),
            data=data[i * chunk_size : (i + 1) * chunk_size],
        )
        for i in range(count)
    ]


class _Assembly:
    """One message being reassembled from its frames."""

    def __init__(self, first: spb.Frame, *, peer: str, max_bytes: int) -> None:
        self.peer = peer
        if first.index != 0:
            raise RemoteProtocolError(peer, f"message starts at frame {first.index}, not 0")
        if first.total_size > max_bytes:
            raise OversizedMessageError(
                peer, f"message of {first.total_size} bytes exceeds the limit of {max_bytes}"
            )
        if first.count < 1 or first.count > max(1, first.total_size):
            raise RemoteProtocolError(
                peer, f"frame count {first.count} impossible for {first.total_size} bytes"
            )
        self.header = first.header
        self.count = first.count
        self.total = first.total_size
        self.parts: list[bytes] = []
        self.size = 0
        self.add(first)

    def add(self, frame: spb.Frame) -> None:
        expected = len(self.parts)
        if frame.index != expected or frame.count != self.count or frame.total_size != self.total:
            raise RemoteProtocolError(
                self.peer,
                f"frame {frame.index}/{frame.count} ({frame.total_size} bytes) out of sequence: "
                f"expected frame {expected}/{self.count} ({self.total} bytes)",
            )
        if frame.header != self.header:
            raise RemoteProtocolError(self.peer, f"frame {frame.index} carries a different header")
        self.size += len(frame.data)
        if self.size > self.total:
            raise RemoteProtocolError(self.peer, f"frames carry more than {self.total} bytes")
        self.parts.append(frame.data)

    @property
    def done(self) -> bool:
        return len(self.parts) == self.count

    def payload(self) -> bytes:
        if self.size != self.total:
            raise RemoteProtocolError(
                self.peer, f"frames carry {self.size} bytes, header announced {self.total}"
            )
        return b"".join(self.parts)


def read_messages(
    frames: Iterable[spb.Frame], *, peer: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Iterator[tuple[pb.Header, bytes]]:
    """Reassemble consecutive messages from one stream of frames."""
    current: _Assembly | None = None
    for frame in frames:
        if current is None:
            current = _Assembly(frame, peer=peer, max_bytes=max_bytes)
        else:
            current.add(frame)
        if current.done:
            yield current.header, current.payload()
            current = None
    if current is not None:
        raise RemoteProtocolError(
            peer, f"stream ended after {len(current.parts)} of {current.count} frames"
        )


def read_one(
    frames: Iterable[spb.Frame], *, peer: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[pb.Header, bytes]:
    """Exactly one message from a stream (a Submit call)."""
    messages = read_messages(frames, peer=peer, max_bytes=max_bytes)
    first = next(messages, None)
    if first is None:
        raise RemoteProtocolError(peer, "stream carried no message")
    if next(messages, None) is not None:
        raise RemoteProtocolError(peer, "stream carried more than one message")
    return first
