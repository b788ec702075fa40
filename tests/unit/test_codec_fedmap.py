"""The FedMAP round announcement on the wire."""

from __future__ import annotations

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.errors import LocalProtocolError, RemoteProtocolError
from fedmap_secure.transport import codec
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

SID = b"\x09" * 32
LAYOUT = VectorLayout((Field(name="theta", length=3, bound=1.0),))


def _setup(round_index: int = 4) -> tm.SecAggSetup:
    return tm.SecAggSetup(
        version=1,
        session_id=SID,
        round_index=round_index,
        sender="@server",
        layout=LAYOUT,
        context=b"c" * 32,
        config_digest=bytes(32),
        roster_digest=bytes(32),
        stage_timeout_ms=100,
    )


def _round(**overrides: object) -> tm.FedMapRound:
    fields: dict[str, object] = {
        "version": 1,
        "session_id": SID,
        "round_index": 4,
        "sender": "@server",
        "gamma": np.array([0.5, -1.25, 3e-300]),
        "psi": np.array([1.0, 2.0]),
        "config_json": '{"method": "fedmap"}',
        "setup": _setup(),
    }
    fields.update(overrides)
    return tm.FedMapRound(**fields)  # type: ignore[arg-type]


def _wire(message: tm.FedMapRound) -> tm.FedMapRound:
    data = codec.encode_server_message(message).SerializeToString()
    decoded = codec.parse_server_message(data, peer="@server")
    assert isinstance(decoded, tm.FedMapRound)
    return decoded


def _same(a: tm.FedMapRound, b: tm.FedMapRound) -> None:
    assert (a.session_id, a.round_index, a.config_json, a.setup, a.final) == (
        b.session_id,
        b.round_index,
        b.config_json,
        b.setup,
        b.final,
    )
    np.testing.assert_array_equal(a.gamma, b.gamma)
    if a.psi is None or b.psi is None:
        assert a.psi is None
        assert b.psi is None
    else:
        np.testing.assert_array_equal(a.psi, b.psi)


def test_round_trip_with_and_without_psi_and_final() -> None:
    for message in (
        _round(),
        _round(psi=None),
        _round(setup=None, final=True),
        _round(gamma=np.zeros(0)),
    ):
        _same(_wire(message), message)


def test_gamma_is_packed_float64_little_endian() -> None:
    proto = codec.encode_server_message(_round())
    assert proto.fedmap_round.gamma == np.array([0.5, -1.25, 3e-300], dtype="<f8").tobytes()


def test_construction_checks() -> None:
    with pytest.raises(LocalProtocolError, match="iff not final"):
        _round(final=True)
    with pytest.raises(LocalProtocolError, match="iff not final"):
        _round(setup=None)
    with pytest.raises(LocalProtocolError, match="header differs"):
        _round(setup=_setup(round_index=5))
    with pytest.raises(LocalProtocolError, match="NaN or infinity"):
        _round(gamma=np.array([np.nan]))
    with pytest.raises(LocalProtocolError, match="float64"):
        _round(psi=np.array([1, 2]))


def _refused(proto: spb.ServerMessage, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        codec.parse_server_message(proto.SerializeToString(), peer="@server")
    assert info.value.peer == "@server"


def test_malformed_announcements() -> None:
    proto = codec.encode_server_message(_round())
    proto.fedmap_round.gamma = proto.fedmap_round.gamma[:-3]
    _refused(proto, "gamma of 21 bytes")
    proto = codec.encode_server_message(_round())
    proto.fedmap_round.has_psi = False
    _refused(proto, "has_psi is false")
    proto = codec.encode_server_message(_round())
    proto.fedmap_round.gamma = np.array([np.inf]).tobytes()
    _refused(proto, "NaN or infinity")
    proto = codec.encode_server_message(_round())
    proto.fedmap_round.ClearField("secagg")
    _refused(proto, "iff not final")
    proto = codec.encode_server_message(_round())
    proto.fedmap_round.secagg.header.round = 9
    _refused(proto, "header differs")
