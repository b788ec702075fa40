"""Channel security: mutual TLS (the deployment mode) or explicit plaintext for local runs.

With mutual TLS the server requires a client certificate signed by the
consortium CA, and the certificate's common name is the site's identity: the
server refuses any message whose header names another sender. Plaintext
(``Insecure``) exists only for local experiments on one machine and must be
asked for explicitly; the server then trusts the sender named in each message.

Plaintext is confined to loopback (``require_loopback``: the server listens,
and a site connects, only on 127.0.0.0/8, ::1 or localhost). Without TLS a
network attacker could forge the messages that carry no signature
(``MaskedInput``, ``Decline``, ``ShareKeys``' envelopes are sealed but the
message is not signed); rather than sign every message twice, the mode is
removed from every network: the only party that can reach a loopback port is
a process on the same machine, which the threat model does not cover
(THREAT_MODEL A3, S12).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import grpc

from fedmap_secure.errors import ConfigError
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


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or ``[v6]:port``, or a bare host) names this machine only."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    elif address.startswith("[") and "]:" in address:
        host = address[1 : address.index("]")]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(address: str, security: MutualTls | Insecure) -> None:
    """Refuse plaintext gRPC on anything but loopback (``ConfigError``)."""
    if isinstance(security, Insecure) and not is_loopback(address):
        raise ConfigError(
            f"plaintext gRPC is allowed on loopback only (127.0.0.1, ::1, localhost), not "
            f"{address!r}: without TLS anyone on the network could forge unsigned messages; "
            "use mutual TLS"
        )


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


def certificate_ids(context: grpc.ServicerContext) -> frozenset[str] | None:
    """The peer certificate's serial number and SHA-256 fingerprint (lowercase hex, no
    leading zeros for the serial), for revocation; None when no certificate is presented."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError:
        return None
    serial = format(cert.serial_number, "x")
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().lstrip("0") or "0"
    return frozenset({serial, fingerprint})


def tls_identity(context: grpc.ServicerContext) -> str | None:
    """The common name of the peer's verified client certificate, if the channel has one."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if not names:
        return None
    value = names[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
