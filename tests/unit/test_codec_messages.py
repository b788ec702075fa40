"""Every message of a real round survives the codec unchanged, and the round still completes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TypeVar, cast

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.errors import LocalProtocolError
from fedmap_secure.secagg import messages as sm
from fedmap_secure.transport import codec
from fedmap_secure.transport import messages as tm
from tests.unit.secagg_harness import Round, expected_sum

SETUP_ID = bytes(range(32))
S = TypeVar("S", bound=codec.SiteWireMessage)
R = TypeVar("R", bound=codec.ServerWireMessage)


def _same(a: object, b: object) -> bool:
    if isinstance(a, sm.MaskedInput) and isinstance(b, sm.MaskedInput):
        return (a.version, a.session_id, a.round_index, a.sender) == (
            b.version,
            b.session_id,
            b.round_index,
            b.sender,
        ) and np.array_equal(a.masked, b.masked)
    return a == b


def _site_wire(message: S) -> S:
    data = codec.encode_site_message(message).SerializeToString()
    decoded = codec.parse_site_message(data, peer=message.sender)
    assert type(decoded) is type(message)
    assert _same(decoded, message)
    return cast(S, decoded)


def _server_wire(message: R) -> R:
    data = codec.encode_server_message(message).SerializeToString()
    decoded = codec.parse_server_message(data, peer="@server")
    assert type(decoded) is type(message)
    assert _same(decoded, message)
    return cast(R, decoded)


class WireRound(Round):
    """The harness round with every message serialized and parsed on the way."""

    def to_server(self, messages: Mapping[str, sm.ClientMessage | None]) -> None:
        super().to_server({s: None if m is None else _site_wire(m) for s, m in messages.items()})

    def to_clients(
        self, messages: Mapping[str, sm.ServerMessage], only: Iterable[str] | None = None
    ) -> dict[str, sm.ClientMessage | None]:
        return super().to_clients({s: _server_wire(m) for s, m in messages.items()}, only)


def test_full_round_through_the_codec_gives_the_same_sum() -> None:
    r = WireRound(n=4, t=3)
    out = r.run()
    assert np.array_equal(out.total, expected_sum(r.sites))
    assert out.contributors == frozenset(r.sites)


def test_round_with_a_dropout_through_the_codec() -> None:
    r = WireRound(n=5, t=3)
    deliveries = r.share(r.advertise())
    survivors = [s for s in r.sites if s != "s2"]
    out = r.unmask(r.sign(r.mask(deliveries, survivors)))
    assert np.array_equal(out.total, expected_sum(survivors))
    assert out.dropped == frozenset({"s2"})


def test_transport_messages_round_trip() -> None:
    layout = VectorLayout(
        (Field(name="theta", length=5, bound=2.5), Field(name="omega", length=1, bound=1.0))
    )
    setup = tm.SecAggSetup(
        version=1,
        session_id=SETUP_ID,
        round_index=3,
        sender="@server",
        layout=layout,
        context=b"ctx",
        config_digest=bytes(32),
        roster_digest=b"\x01" * 32,
        stage_timeout_ms=1500,
    )
    assert _server_wire(setup) == setup
    assert setup.previous_transcript_hash == b""  # a server that records no transcript
    recorded = dataclasses.replace(setup, previous_transcript_hash=b"\x07" * 32)
    assert _server_wire(recorded) == recorded
    with pytest.raises(LocalProtocolError, match="previous_transcript_hash"):
        dataclasses.replace(setup, previous_transcript_hash=b"\x07" * 31)
    outcome = tm.RoundOutcome(
        version=1,
        session_id=SETUP_ID,
        round_index=3,
        sender="@server",
        status=tm.RoundStatus.ABORTED,
        contributors=(),
        detail="few",
    )
    assert _server_wire(outcome) == outcome
    for reason in tm.DeclineReason:
        decline = tm.Decline(
            version=1, session_id=SETUP_ID, round_index=3, sender="site-a", reason=reason
        )
        assert _site_wire(decline) == decline
    join = tm.JoinRequest(version=1, round_index=4, sender="site-a")
    assert codec.decode_join(codec.encode_join(join), peer="site-a") == join


def test_masked_vector_is_packed_little_endian_bytes() -> None:
    values = np.array([1, 2**64 - 1, 2**32], dtype=np.uint64)
    message = sm.MaskedInput(
        version=1, session_id=SETUP_ID, round_index=0, sender="s0", masked=values
    )
    proto = codec.encode_site_message(message)
    assert proto.masked_input.masked == b"".join(int(v).to_bytes(8, "little") for v in values)
    overhead = len(proto.SerializeToString()) - 8 * len(values)
    assert overhead < 64
