"""``fedmap-secure keygen``: key material for a consortium, as plain functions for the CLI.

- ``keygen_consortium(out, sites, server_hosts)``: a test CA, server and site
  certificates, every site's Ed25519 identity key and ``roster.json``
  (``pki.generate_deployment``); prints nothing secret.
- ``keygen_identity(path)``: one site's identity key only (for consortia with
  their own CA); returns the hex public key to send to the roster keeper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fedmap_secure.transport.pki import Deployment, create_identity, generate_deployment


def keygen_consortium(
    out: Path, sites: Sequence[str], server_hosts: Sequence[str] = ("localhost", "127.0.0.1")
) -> list[str]:
    """Write the deployment under ``out``; returns a human-readable list of what was written."""
    deployment: Deployment = generate_deployment(out, sites, server_hosts=server_hosts)
    lines = [
        f"CA certificate      {deployment.ca}",
        f"CA private key      {out / 'ca.key'} (keep offline)",
        f"server certificate  {deployment.server_tls().certificate}",
        f"roster              {deployment.roster}",
    ]
    lines += [f"site {s}: {deployment.site_tls(s).certificate.parent}/" for s in sorted(set(sites))]
    return lines


def keygen_identity(path: Path) -> str:
    """Create one identity key file (0600); returns its public key, hex, for the roster."""
    return create_identity(path).public.hex()
