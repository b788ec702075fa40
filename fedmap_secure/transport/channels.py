"""Outbound channels of a site, and the keepalive settings both ends agree on.

A site's ``Join`` stream can sit idle for as long as local training takes;
firewalls and NAT devices drop idle connections silently. Sites therefore send
HTTP/2 keepalive pings every 20 s (also while no call is active), and the
server accepts pings that often instead of answering with GOAWAY.
"""

from __future__ import annotations

import grpc

from fedmap_secure.transport.security import (
    Insecure,
    MutualTls,
    channel_credentials,
    require_loopback,
)

GRPC_MESSAGE_LIMIT = 4 << 20
KEEPALIVE_MS = 20_000

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
]
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_LIMIT),
    ("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT),
]


def open_channel(target: str, security: MutualTls | Insecure) -> grpc.Channel:
    """A channel to the server at ``target`` (``host:port``), mutual TLS unless ``Insecure``
    (plaintext: loopback targets only, ``ConfigError`` otherwise)."""
    require_loopback(target, security)
    if isinstance(security, MutualTls):
        options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
        if security.server_name is not None:
            options.append(("grpc.ssl_target_name_override", security.server_name))
        return grpc.secure_channel(target, channel_credentials(security), options=options)
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
