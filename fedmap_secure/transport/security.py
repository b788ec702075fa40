"""Channel security: mutual TLS (the deployment mode) or explicit plaintext for local runs.

With mutual TLS the server requires a client certificate signed by the
consortium CA, and the certificate's common name is the site's identity: the
server refuses any message whose header names another sender. Plaintext
(``Insecure``) exists only for local experiments on one machine and must be
asked for explicitly; the server then trusts the sender named in each message.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from fedmap_secure.transport.pki import TlsFiles


@dataclass(frozen=True, kw_only=True)
class MutualTls:
    """Mutual TLS with the given files (CA, own certificate, own key)."""

    files: TlsFiles
    # Host name the site expects in the server certificate (defaults to the target host).
    server_name: str | None = None


@dataclass(frozen=True)
class Insecure:
    """Plaintext gRPC: local experiments only (no confidentiality, no sender authentication)."""


Security = MutualTls | Insecure


def server_credentials(security: MutualTls) -> grpc.ServerCredentials:
    ca, cert, key = security.files.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(security: MutualTls) -> grpc.ChannelCredentials:
    ca, cert, key = security.files.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def tls_identity(context: grpc.ServicerContext) -> str | None:
    """The common name of the peer's verified client certificate, if the channel has one."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if not names:
        return None
    value = names[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
