"""Binding of the ``Federation`` service (service.proto) to gRPC, without generated stubs.

Method paths come from the schema's descriptor, so they cannot drift from the
.proto file. Requests are received as raw bytes and parsed by our own code, so
garbage from a peer is refused with INVALID_ARGUMENT and a message naming the
peer (grpc's own deserializer would answer INTERNAL).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.transport.generated.v1 import service_pb2 as spb

P = TypeVar("P", spb.Frame, spb.JoinRequest, spb.FetchFinalRequest)
SERVICE_NAME: str = spb.DESCRIPTOR.services_by_name["Federation"].full_name
JOIN_METHOD = f"/{SERVICE_NAME}/Join"
SUBMIT_METHOD = f"/{SERVICE_NAME}/Submit"
FETCH_FINAL_METHOD = f"/{SERVICE_NAME}/FetchFinal"


class FederationService(Protocol):
    """What a server implements: raw request bytes in, protobuf out."""

    def join(self, request: bytes, context: grpc.ServicerContext) -> Iterator[spb.Frame]: ...

    def submit(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> spb.SubmitAck: ...

    def fetch_final(self, request: bytes, context: grpc.ServicerContext) -> Iterator[spb.Frame]: ...


def _serialize(
    message: spb.Frame | spb.SubmitAck | spb.JoinRequest | spb.FetchFinalRequest,
) -> bytes:
    return message.SerializeToString()


def service_handler(service: FederationService) -> grpc.GenericRpcHandler:
    """A generic handler serving ``service`` under the schema's method names."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Join": grpc.unary_stream_rpc_method_handler(
                service.join, response_serializer=_serialize
            ),
            "Submit": grpc.stream_unary_rpc_method_handler(
                service.submit, response_serializer=_serialize
            ),
            "FetchFinal": grpc.unary_stream_rpc_method_handler(
                service.fetch_final, response_serializer=_serialize
            ),
        },
    )


def parse_frame(data: bytes, *, peer: str) -> spb.Frame:
    return _parse(spb.Frame(), data, peer=peer)


def parse_join(data: bytes, *, peer: str) -> spb.JoinRequest:
    return _parse(spb.JoinRequest(), data, peer=peer)


def parse_fetch_final(data: bytes, *, peer: str) -> spb.FetchFinalRequest:
    return _parse(spb.FetchFinalRequest(), data, peer=peer)


def _parse(proto: P, data: bytes, *, peer: str) -> P:
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeWarning) as exc:
        name = type(proto).__name__
        raise RemoteProtocolError(peer, f"undecodable {name} ({len(data)} bytes): {exc}") from None
    return proto


class FederationStub:
    """Client side of the service on one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        # Frames arrive as raw bytes and are parsed by ``parse_frame`` (errors name the server).
        self.join = channel.unary_stream(JOIN_METHOD, request_serializer=_serialize)
        self.submit = channel.stream_unary(
            SUBMIT_METHOD,
            request_serializer=_serialize,
            response_deserializer=spb.SubmitAck.FromString,
        )
        self.fetch_final = channel.unary_stream(FETCH_FINAL_METHOD, request_serializer=_serialize)
