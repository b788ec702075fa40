"""``fedmap-secure keygen``: key material for a consortium, as plain functions for the CLI.

- ``keygen_consortium(out, sites, server_hosts)``: a test CA, server and site
  certificates, every site's Ed25519 identity key and ``roster.json``
  (``pki.generate_deployment``); prints nothing secret.
- ``keygen_identity(path)``: one site's identity key only (for consortia with
  their own CA); returns the hex public key to send to the roster keeper.
- ``keygen_step(args)``: the several-machines steps (DEPLOYMENT.md): ``--ca`` (the
  coordinator's CA and server certificate), ``--site NAME`` (a site's own keys and
  certificate request, on its machine), ``--sign CSR --ca-dir DIR`` (the CA issues
  the site's certificate), ``--roster FILE --add SITE=HEX``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fedmap_secure.errors import ConfigError
from fedmap_secure.transport.pki import (
    Deployment,
    add_to_roster,
    create_identity,
    generate_ca,
    generate_deployment,
    sign_request,
    site_request,
)


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


def keygen_step(args: argparse.Namespace) -> list[str]:
    """One several-machines step (see the module docstring); returns lines to print."""
    if args.ca:
        hosts = args.server_host or ["localhost", "127.0.0.1"]
        layout = generate_ca(args.out, server_hosts=hosts)
        return [
            f"CA certificate      {layout.ca} (send to every site)",
            f"CA private key      {args.out / 'ca.key'} (keep offline)",
            f"server certificate  {layout.server_tls().certificate}",
        ]
    if args.site:
        public = site_request(args.out, args.site)
        return [
            f"wrote {args.out / 'site.key'} and {args.out / 'identity.pem'} (0600, stay here)",
            f"send {args.out / 'site.csr'} and this identity public key to the coordinator:",
            public.hex(),
        ]
    if args.sign:
        if args.ca_dir is None:
            raise ConfigError("--sign needs --ca-dir (the folder of ca.pem and ca.key)")
        site = sign_request(args.ca_dir, args.sign, args.out)
        return [f"issued {args.out} for site {site}: send it back to the site"]
    if args.add is None or "=" not in args.add:
        raise ConfigError("--roster needs --add SITE=HEX")
    site, _, public = args.add.partition("=")
    count = add_to_roster(args.roster, site.strip(), public.strip())
    return [f"{args.roster}: {site} added ({count} site(s) on the roster)"]
