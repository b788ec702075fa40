"""A late site (fine-tune or unseen tier) fetches the final global state over gRPC.

``fetch_final`` calls ``FetchFinal`` on the site's own outbound channel (the
same mutual-TLS channel a training site uses; the server answers only an
authenticated roster or late-roster identity), reassembles the frames into the
final ``FedMapRound`` (global model gamma, prior psi, run configuration) and
checks it: a final announcement whose session id is the digest of its own
configuration and state (``runtime.announcement.final_digest``). Whatever the
site then does with it (fine-tune under its own DP policy, evaluate) is the
site runtime's (``runtime.SiteRuntime.handle``); the site sends the server
nothing else.

The server holds the call until training has ended; it answers UNAVAILABLE
when it has not ended within its join timeout, or when it is unreachable (e.g.
restarting): the site calls again, and gives up after ``patience`` seconds
without reaching a server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import grpc

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.runtime.announcement import final_digest, state_of
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.transport import codec, framing, rpc
from fedmap_secure.transport import messages as tm

log = logging.getLogger(__name__)


def fetch_final(
    channel: grpc.Channel,
    *,
    site_id: str,
    patience: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    max_bytes: int = framing.DEFAULT_MAX_MESSAGE_BYTES,
) -> tm.FedMapRound:
    """The run's final announcement, checked (see the module docstring)."""
    stub = rpc.FederationStub(channel)
    request = codec.encode_fetch_final(tm.FetchFinal(version=PROTOCOL_VERSION, sender=site_id))
    unreachable = 0.0
    while True:
        try:
            frames = (rpc.parse_frame(raw, peer=SERVER_ID) for raw in stub.fetch_final(request))
            messages = list(framing.read_messages(frames, peer=SERVER_ID, max_bytes=max_bytes))
        except grpc.RpcError as exc:
            code, detail = exc.code(), exc.details() or ""
            if code is not grpc.StatusCode.UNAVAILABLE:
                raise RemoteProtocolError(
                    SERVER_ID, f"final state refused: {code.name}: {detail}"
                ) from None
            if "has not ended" in detail:  # reachable: training still runs
                unreachable = 0.0
                log.info("site %s: %s", site_id, detail)
                continue
            if unreachable >= patience:
                raise RemoteProtocolError(
                    SERVER_ID, f"cannot fetch the final state: {detail}"
                ) from None
            sleep(1.0)
            unreachable += 1.0
            continue
        return _checked(messages)


def _checked(messages: Sequence[tuple[object, bytes]]) -> tm.FedMapRound:
    if len(messages) != 1:
        raise RemoteProtocolError(SERVER_ID, f"FetchFinal carried {len(messages)} messages, not 1")
    ((_, data),) = messages
    final = codec.parse_server_message(data, peer=SERVER_ID)
    if not isinstance(final, tm.FedMapRound) or not final.final:
        raise RemoteProtocolError(SERVER_ID, "FetchFinal answered with no final FedMAP round")
    if final.session_id != final_digest(final.config_json, state_of(final)):
        raise RemoteProtocolError(
            SERVER_ID,
            "the final announcement's id is not the digest of its configuration and state",
        )
    return final
