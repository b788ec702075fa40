"""Stages of each role and the transition tables (h11's ``_state`` ring).

Discipline: every change of a session's stage happens through ``next_client_stage``
or ``next_server_stage``, which read the tables below; a (stage, event) pair
absent from a table is illegal. ``client`` and ``server`` never assign a stage
any other way, except ``FAILED``/``ABORTED`` on error, which are sticky.

Client (one site, talking only to the server)::

    READY        --start()-------------------> ADVERTISED        (sends AdvertiseKeys)
    ADVERTISED   --KeyBroadcast--------------> KEYS_SHARED       (sends ShareKeys)
    KEYS_SHARED  --ShareDelivery-------------> SHARES_RECEIVED
    SHARES_RECEIVED --submit_input()---------> INPUT_MASKED      (sends MaskedInput)
    INPUT_MASKED --ConsistencyRequest--------> SIGNED            (sends ConsistencySignature)
    SIGNED       --UnmaskRequest-------------> DONE              (sends UnmaskResponse)
    any          --error---------------------> FAILED            (sticky; secrets dropped)

Server (collects one message type per stage from each site, then is told to close)::

    COLLECTING_KEYS       accepts AdvertiseKeys          --close--> COLLECTING_SHARES
    COLLECTING_SHARES     accepts ShareKeys              --close--> COLLECTING_INPUTS
    COLLECTING_INPUTS     accepts MaskedInput            --close--> COLLECTING_SIGNATURES
    COLLECTING_SIGNATURES accepts ConsistencySignature   --close--> COLLECTING_UNMASK
    COLLECTING_UNMASK     accepts UnmaskResponse         --finish-> DONE
    any collecting stage  --fewer than t---------------> ABORTED (sticky)
    any                   --local misuse---------------> FAILED  (sticky)
"""

from __future__ import annotations

import enum

from fedmap_secure.errors import LocalProtocolError
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeyBroadcast,
    MaskedInput,
    Message,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
)


class ClientStage(enum.Enum):
    READY = "ready"
    ADVERTISED = "advertised"
    KEYS_SHARED = "keys-shared"
    SHARES_RECEIVED = "shares-received"
    INPUT_MASKED = "input-masked"
    SIGNED = "signed"
    DONE = "done"
    FAILED = "failed"


class LocalEvent(enum.Enum):
    """Calls a client's own driver makes (as opposed to messages from the server)."""

    START = "start"
    SUBMIT_INPUT = "submit-input"


ClientEvent = type[Message] | LocalEvent

CLIENT_TRANSITIONS: dict[tuple[ClientStage, ClientEvent], ClientStage] = {
    (ClientStage.READY, LocalEvent.START): ClientStage.ADVERTISED,
    (ClientStage.ADVERTISED, KeyBroadcast): ClientStage.KEYS_SHARED,
    (ClientStage.KEYS_SHARED, ShareDelivery): ClientStage.SHARES_RECEIVED,
    (ClientStage.SHARES_RECEIVED, LocalEvent.SUBMIT_INPUT): ClientStage.INPUT_MASKED,
    (ClientStage.INPUT_MASKED, ConsistencyRequest): ClientStage.SIGNED,
    (ClientStage.SIGNED, UnmaskRequest): ClientStage.DONE,
}


class ServerStage(enum.Enum):
    COLLECTING_KEYS = "collecting-keys"
    COLLECTING_SHARES = "collecting-shares"
    COLLECTING_INPUTS = "collecting-inputs"
    COLLECTING_SIGNATURES = "collecting-signatures"
    COLLECTING_UNMASK = "collecting-unmask"
    DONE = "done"
    ABORTED = "aborted"
    FAILED = "failed"


SERVER_ACCEPTS: dict[ServerStage, type[Message]] = {
    ServerStage.COLLECTING_KEYS: AdvertiseKeys,
    ServerStage.COLLECTING_SHARES: ShareKeys,
    ServerStage.COLLECTING_INPUTS: MaskedInput,
    ServerStage.COLLECTING_SIGNATURES: ConsistencySignature,
    ServerStage.COLLECTING_UNMASK: UnmaskResponse,
}
"""The one client message type each server stage accepts."""

SERVER_TRANSITIONS: dict[ServerStage, ServerStage] = {
    ServerStage.COLLECTING_KEYS: ServerStage.COLLECTING_SHARES,
    ServerStage.COLLECTING_SHARES: ServerStage.COLLECTING_INPUTS,
    ServerStage.COLLECTING_INPUTS: ServerStage.COLLECTING_SIGNATURES,
    ServerStage.COLLECTING_SIGNATURES: ServerStage.COLLECTING_UNMASK,
    ServerStage.COLLECTING_UNMASK: ServerStage.DONE,
}
"""Where closing (or finishing) each collecting stage leads when enough sites took part."""


def next_client_stage(stage: ClientStage, event: ClientEvent) -> ClientStage:
    """The stage after ``event``; ``LocalProtocolError`` if the table has no such edge.

    Callers turn the error into ``RemoteProtocolError`` when ``event`` came from the server.
    """
    try:
        return CLIENT_TRANSITIONS[(stage, event)]
    except KeyError:
        name = event.value if isinstance(event, LocalEvent) else event.__name__
        raise LocalProtocolError(f"{name} is not allowed in client stage {stage.value}") from None


def next_server_stage(stage: ServerStage) -> ServerStage:
    try:
        return SERVER_TRANSITIONS[stage]
    except KeyError:
        raise LocalProtocolError(f"server stage {stage.value} cannot be closed") from None
