"""Exhaustive stage-by-event tests of both transition tables.

Every (stage, message type) pair that the table does not allow must raise the
specific protocol error; a client that raised stays FAILED (every later call
raises LocalProtocolError); the server names and excludes the offending site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache

import numpy as np
import pytest

from fedmap_secure.errors import AbortedError, LocalProtocolError, RemoteProtocolError
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.secagg.messages import (
    CLIENT_MESSAGE_TYPES,
    SERVER_MESSAGE_TYPES,
    KeyBroadcast,
    Message,
)
from fedmap_secure.secagg.stages import (
    CLIENT_TRANSITIONS,
    SERVER_ACCEPTS,
    ClientStage,
    LocalEvent,
    ServerStage,
)

from .secagg_harness import Round, encoded_input

ALL_TYPES = (*CLIENT_MESSAGE_TYPES, *SERVER_MESSAGE_TYPES)


@cache
def samples() -> dict[type[Message], Message]:
    """One well-formed instance of every message type, recorded from an honest round."""
    r = Round(n=4, t=3, seed=b"samples")
    out: dict[type[Message], Message] = {}

    def keep(messages: Mapping[str, Message | None]) -> None:
        for m in messages.values():
            if m is not None:
                out.setdefault(type(m), m)

    ads = {s: r.clients[s].start() for s in r.sites}
    keep(ads)
    r.to_server(ads)
    for step in range(4):
        outgoing = r.server.close_stage()
        keep(outgoing)
        replies = r.to_clients(outgoing)
        if step == 1:
            replies = {s: r.clients[s].submit_input(encoded_input(s)) for s in replies}
        keep(replies)
        r.to_server(replies)
    assert set(out) == set(ALL_TYPES)
    return out


def client_in(stage: ClientStage) -> tuple[Round, ClientSession]:
    """A fresh round whose site s0 is in ``stage`` (reached honestly)."""
    r = Round(n=4, t=3)
    c = r.clients["s0"]
    if stage is ClientStage.READY:
        return r, c
    if stage is ClientStage.FAILED:
        with pytest.raises(LocalProtocolError):
            c.submit_input(np.zeros(4, dtype=np.uint64))
        return r, c
    broadcasts = r.advertise()
    if stage is ClientStage.ADVERTISED:
        return r, c
    deliveries = r.share(broadcasts)
    if stage is ClientStage.KEYS_SHARED:
        return r, c
    r.to_clients(deliveries)
    if stage is ClientStage.SHARES_RECEIVED:
        return r, c
    r.to_server({s: r.clients[s].submit_input(encoded_input(s)) for s in r.sites})
    requests = r.server.close_stage()
    if stage is ClientStage.INPUT_MASKED:
        return r, c
    unmask_requests = r.sign(requests)
    if stage is ClientStage.SIGNED:
        return r, c
    r.to_clients(unmask_requests)
    assert stage is ClientStage.DONE
    return r, c


@pytest.mark.parametrize("stage", list(ClientStage))
def test_client_reaches_every_stage_honestly(stage: ClientStage) -> None:
    _, c = client_in(stage)
    assert c.stage is stage


ILLEGAL_CLIENT_PAIRS = [
    (stage, t)
    for stage in ClientStage
    if stage is not ClientStage.FAILED
    for t in ALL_TYPES
    if (stage, t) not in CLIENT_TRANSITIONS
]


@pytest.mark.parametrize(
    ("stage", "message_type"),
    ILLEGAL_CLIENT_PAIRS,
    ids=[f"{s.value}-{t.__name__}" for s, t in ILLEGAL_CLIENT_PAIRS],
)
def test_client_refuses_illegal_message_and_stays_failed(
    stage: ClientStage, message_type: type[Message]
) -> None:
    _, c = client_in(stage)
    message = samples()[message_type]
    with pytest.raises(RemoteProtocolError, match="not allowed in client stage") as info:
        c.receive(message)  # type: ignore[arg-type]
    assert info.value.peer == SERVER_ID
    assert c.stage is ClientStage.FAILED
    with pytest.raises(LocalProtocolError, match="failed"):
        c.receive(message)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="failed"):
        c.start()


@pytest.mark.parametrize("message_type", ALL_TYPES, ids=[t.__name__ for t in ALL_TYPES])
def test_failed_client_refuses_everything_locally(message_type: type[Message]) -> None:
    _, c = client_in(ClientStage.FAILED)
    with pytest.raises(LocalProtocolError, match="failed"):
        c.receive(samples()[message_type])  # type: ignore[arg-type]
    assert c.stage is ClientStage.FAILED


ILLEGAL_LOCAL = [
    (stage, event)
    for stage in ClientStage
    for event in LocalEvent
    if (stage, event) not in CLIENT_TRANSITIONS
]


@pytest.mark.parametrize(
    ("stage", "event"), ILLEGAL_LOCAL, ids=[f"{s.value}-{e.value}" for s, e in ILLEGAL_LOCAL]
)
def test_client_refuses_illegal_local_calls(stage: ClientStage, event: LocalEvent) -> None:
    _, c = client_in(stage)
    call: Callable[[], object] = (
        c.start if event is LocalEvent.START else lambda: c.submit_input(encoded_input("s0"))
    )
    with pytest.raises(LocalProtocolError):
        call()
    assert c.stage is ClientStage.FAILED


def test_client_secrets_are_erased_when_done_or_failed() -> None:
    for stage in (ClientStage.DONE, ClientStage.FAILED):
        _, c = client_in(stage)
        assert c._mask_keys is None
        assert c._enc_keys is None
        assert c._self_seed is None
        assert c._held == {}
        assert c._share_keys == {}
    _, c = client_in(ClientStage.SIGNED)
    assert c._held
    with pytest.raises(RemoteProtocolError):
        c.receive(samples()[KeyBroadcast])  # type: ignore[arg-type]
    assert c._held == {}
    assert c._share_keys == {}
    assert c._mask_keys is None


# ----------------------------------------------------------------------------- server


def server_in(stage: ServerStage) -> Round:
    r = Round(n=4, t=3)
    if stage is ServerStage.ABORTED:
        r.to_server({s: r.clients[s].start() for s in ("s0", "s1")})
        with pytest.raises(AbortedError):
            r.server.close_stage()
        return r
    if stage is ServerStage.FAILED:
        with pytest.raises(LocalProtocolError):
            r.server.finish()
        return r
    if stage is ServerStage.COLLECTING_KEYS:
        return r
    outgoing = r.advertise()
    later = [r.share, r.mask, r.sign]
    for step, reached in zip(later, list(SERVER_ACCEPTS)[1:], strict=False):
        if stage is reached:
            return r
        outgoing = step(outgoing)
    if stage is ServerStage.COLLECTING_UNMASK:
        return r
    r.unmask(outgoing)
    return r


@pytest.mark.parametrize("stage", list(ServerStage))
def test_server_reaches_every_stage(stage: ServerStage) -> None:
    assert server_in(stage).server.stage is stage


ILLEGAL_SERVER_PAIRS = [
    (stage, t) for stage, accepted in SERVER_ACCEPTS.items() for t in ALL_TYPES if t is not accepted
]


@pytest.mark.parametrize(
    ("stage", "message_type"),
    ILLEGAL_SERVER_PAIRS,
    ids=[f"{s.value}-{t.__name__}" for s, t in ILLEGAL_SERVER_PAIRS],
)
def test_server_refuses_illegal_message_and_excludes_the_sender(
    stage: ServerStage, message_type: type[Message]
) -> None:
    r = server_in(stage)
    message = samples()[message_type]
    with pytest.raises(RemoteProtocolError, match="not allowed in server stage") as info:
        r.server.receive(message)  # type: ignore[arg-type]
    assert info.value.peer == message.sender
    assert message.sender in r.server.excluded
    assert r.server.stage is stage
    with pytest.raises(RemoteProtocolError, match="excluded"):
        r.server.receive(message)  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", [ServerStage.DONE, ServerStage.ABORTED, ServerStage.FAILED])
@pytest.mark.parametrize("message_type", ALL_TYPES, ids=[t.__name__ for t in ALL_TYPES])
def test_finished_server_refuses_everything_locally(
    stage: ServerStage, message_type: type[Message]
) -> None:
    r = server_in(stage)
    with pytest.raises(LocalProtocolError, match=stage.value):
        r.server.receive(samples()[message_type])  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        r.server.close_stage()
    with pytest.raises(LocalProtocolError):
        r.server.finish()
    assert r.server.stage is stage


@pytest.mark.parametrize("stage", list(SERVER_ACCEPTS))
def test_server_close_and_finish_only_where_the_table_allows(stage: ServerStage) -> None:
    r = server_in(stage)
    call: Callable[[], object] = (
        r.server.close_stage if stage is ServerStage.COLLECTING_UNMASK else r.server.finish
    )
    with pytest.raises(LocalProtocolError):
        call()
    assert r.server.stage is ServerStage.FAILED
