"""Bad input over real mutual-TLS connections: a clear gRPC status, and the round goes on.

Sites a, b and c run honestly; the round waits in its first stage for site-d,
whose certificate the test uses to send garbage (and "mallory", a CA-signed
certificate that is not on the roster). Afterwards site-d joins honestly and
the round must complete with all four inputs: nothing the bad calls did stuck.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedmap_secure.aggregation import AggregateResult
from fedmap_secure.secagg import messages as sm
from fedmap_secure.transport import codec, framing, rpc
from fedmap_secure.transport.codec import SiteWireMessage
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb
from fedmap_secure.transport.security import MutualTls
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.site import SiteOutcome
from tests.integration.grpc_harness import (
    CONTEXT,
    LAYOUT,
    SITES,
    Consortium,
    exact_inputs,
    make_deployment,
    open_channel,
    play_round,
    running_server,
    start_sites,
)

LIMITS = ServerSettings(
    join_timeout=20.0, join_grace=20.0, stage_timeout=3.0, max_message_bytes=1 << 20
)
SID = b"\x07" * 32


def _header(sender: str = "site-d", round_index: int = 0, version: int = 1) -> pb.Header:
    return pb.Header(version=version, session_id=SID, round=round_index, sender=sender)


def _submit(channel: grpc.Channel, chunks: list[bytes]) -> grpc.RpcError:
    """Send raw frames; return the error the server answered with."""
    call = channel.stream_unary(rpc.SUBMIT_METHOD)
    with pytest.raises(grpc.RpcError) as info:
        call(iter(chunks), timeout=5)
    error = info.value
    assert isinstance(error, grpc.RpcError)
    return error


def _frames(message: spb.SiteMessage, header: pb.Header | None = None) -> list[bytes]:
    data = message.SerializeToString()
    return [f.SerializeToString() for f in framing.split(data, header or _header())]


def _advertise(sender: str = "site-d", round_index: int = 0, version: int = 1) -> spb.SiteMessage:
    ad = pb.AdvertiseKeys(
        header=_header(sender, round_index, version),
        mask_public=b"\x01" * 32,
        encryption_public=b"\x02" * 32,
        signature=b"\x03" * 64,
    )
    return spb.SiteMessage(advertise_keys=ad)


def _check(error: grpc.RpcError, code: grpc.StatusCode, *fragments: str) -> None:
    assert error.code() == code, error.details()
    for fragment in fragments:
        assert fragment in error.details(), error.details()


def _bad_calls(consortium: Consortium, port: int) -> None:
    """Bad calls from site-d (not joined) and from site-a (joined, playing honestly)."""
    assert consortium.deployment is not None
    d = open_channel(port, consortium.security("site-d"))
    a = open_channel(port, consortium.security("site-a"))
    mallory = open_channel(port, MutualTls(files=consortium.deployment.site_tls("mallory")))
    code = grpc.StatusCode
    _check(_submit(d, [b"\xff\x00garbage"]), code.INVALID_ARGUMENT, "site-d", "undecodable Frame")
    garbage_body = [
        spb.Frame(header=_header("site-a"), count=1, total_size=3, data=b"\xff\xff\xff")
    ]
    _check(
        _submit(a, [f.SerializeToString() for f in garbage_body]),
        code.INVALID_ARGUMENT,
        "site-a",
        "undecodable SiteMessage",
    )
    _check(_submit(d, []), code.INVALID_ARGUMENT, "no message")
    big = spb.Frame(header=_header(), count=1, total_size=5 << 20, data=b"\x00" * (5 << 20))
    _check(_submit(d, [big.SerializeToString()]), code.RESOURCE_EXHAUSTED)
    announced = spb.Frame(header=_header(), count=3, total_size=3 << 20, data=b"\x00" * 10)
    _check(
        _submit(d, [announced.SerializeToString()]), code.RESOURCE_EXHAUSTED, "exceeds the limit"
    )
    _check(_submit(a, _truncated("site-a")), code.INVALID_ARGUMENT, "1 of 2")
    short = pb.MaskedInput(header=_header("site-a"), masked=b"\x01" * 13)
    _check(
        _submit(a, _frames(spb.SiteMessage(masked_input=short), _header("site-a"))),
        code.INVALID_ARGUMENT,
        "not a whole number of 8-byte values",
    )
    _check(
        _submit(a, _frames(_advertise("site-a", version=2), _header("site-a"))),
        code.INVALID_ARGUMENT,
        "version 2",
    )
    _check(
        _submit(d, _frames(_advertise(sender="site-a"), _header("site-a"))),
        code.PERMISSION_DENIED,
        "'site-d': message claims sender 'site-a'",
    )
    _check(
        _submit(mallory, _frames(_advertise(sender="mallory"), _header("mallory"))),
        code.PERMISSION_DENIED,
        "'mallory': not on the roster",
    )
    _check(
        _submit(d, _frames(_advertise(round_index=5), _header(round_index=5))),
        code.FAILED_PRECONDITION,
        "round 5 is not open",
    )
    _check(_submit(d, _frames(_advertise())), code.FAILED_PRECONDITION, "join it first")
    join = d.unary_stream(rpc.JOIN_METHOD)
    with pytest.raises(grpc.RpcError) as info:
        list(join(b"\xff\xfe", timeout=5))
    _check(info.value, code.INVALID_ARGUMENT, "site-d", "undecodable JoinRequest")
    join = mallory.unary_stream(rpc.JOIN_METHOD)
    request = spb.JoinRequest(header=pb.Header(version=1, sender="mallory"))
    with pytest.raises(grpc.RpcError) as info:
        list(join(request.SerializeToString(), timeout=5))
    _check(info.value, code.PERMISSION_DENIED, "not on the roster")
    d.close()
    a.close()
    mallory.close()


def _truncated(sender: str = "site-d") -> list[bytes]:
    data = _advertise(sender).SerializeToString()
    frames = framing.split(data, _header(sender), chunk_size=100)
    return [f.SerializeToString() for f in frames][:1]


def _wait_for_round(server: AggregationServer, joined: tuple[str, ...] = SITES[:3]) -> None:
    deadline = time.monotonic() + 10
    while server.open_round is None or not server.joined(joined):
        assert time.monotonic() < deadline, "round never opened"
        time.sleep(0.02)


def test_bad_input_is_refused_and_the_round_completes(tmp_path: Path) -> None:
    consortium = make_deployment(tmp_path, outsiders=("mallory",))
    inputs = exact_inputs()
    results: list[AggregateResult] = []
    with running_server(consortium, settings=LIMITS) as server:
        honest = start_sites(server, consortium, {s: inputs[s] for s in SITES[:3]})
        driver = threading.Thread(
            target=lambda: results.append(
                server.run_round(round_index=0, layout=LAYOUT, context=CONTEXT)
            ),
            daemon=True,
        )
        driver.start()
        _wait_for_round(server)
        _bad_calls(consortium, server.port)
        late = start_sites(server, consortium, {"site-d": inputs["site-d"]})
        driver.join(timeout=30)
        honest.join()
        late.join()
    assert late.reports["site-d"].outcome is SiteOutcome.COMPLETED
    assert results[0].contributors == frozenset(SITES)
    np.testing.assert_array_equal(LAYOUT.flatten(results[0].sums), sum(inputs.values()))


def test_replayed_message_is_refused_without_harm(tmp_path: Path) -> None:
    consortium = make_deployment(tmp_path)
    captured: list[SiteWireMessage] = []
    errors: list[grpc.RpcError] = []
    assert consortium.deployment is not None

    def replay(message: SiteWireMessage) -> None:
        if isinstance(message, sm.AdvertiseKeys):
            captured.append(message)
        if isinstance(message, sm.ShareKeys):  # one stage later, send the old message again
            channel = open_channel(port[0], consortium.security("site-d"))
            data = codec.encode_site_message(captured[0]).SerializeToString()
            frames = framing.split(data, codec.encode_header(captured[0]))
            errors.append(_submit(channel, [f.SerializeToString() for f in frames]))
            channel.close()

    port: list[int] = []
    inputs = exact_inputs()
    with running_server(consortium) as server:
        port.append(server.port)
        run = play_round(server, consortium, inputs, hooks={"site-d": replay})
    _check(errors[0], grpc.StatusCode.ALREADY_EXISTS, "'site-d': replayed message")
    assert run.result is not None
    assert run.result.contributors == frozenset(SITES)


def test_wrong_session_excludes_the_sender_only(tmp_path: Path) -> None:
    consortium = make_deployment(tmp_path)
    errors: list[grpc.RpcError] = []

    def forge(message: SiteWireMessage) -> None:
        if isinstance(message, sm.ShareKeys):
            forged = dataclasses.replace(message, session_id=SID)
            channel = open_channel(port[0], consortium.security("site-d"))
            data = codec.encode_site_message(forged).SerializeToString()
            frames = framing.split(data, codec.encode_header(forged))
            errors.append(_submit(channel, [f.SerializeToString() for f in frames]))
            channel.close()

    port: list[int] = []
    inputs = exact_inputs()
    with running_server(consortium) as server:
        port.append(server.port)
        run = play_round(server, consortium, inputs, hooks={"site-d": forge})
    _check(
        errors[0], grpc.StatusCode.FAILED_PRECONDITION, "'site-d'", "another session", "excluded"
    )
    assert run.reports["site-d"].outcome is SiteOutcome.FAILED
    assert run.result is not None
    assert run.result.contributors == frozenset(SITES) - {"site-d"}
    expected = sum(inputs[s] for s in SITES if s != "site-d")
    np.testing.assert_array_equal(LAYOUT.flatten(run.result.sums), expected)


def test_plaintext_client_cannot_reach_a_tls_server(tmp_path: Path) -> None:
    consortium = make_deployment(tmp_path)
    with running_server(consortium) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        error = _submit(channel, _frames(_advertise()))
        channel.close()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
