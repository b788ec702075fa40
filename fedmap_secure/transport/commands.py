"""Argument parsing and handlers for ``fedmap-secure server | site | keygen``.

``cli.py`` adds these subcommands with ``add_commands(subparsers)`` and hands a
parsed namespace to ``run_command(args, console)``, which returns False for a
command that is not one of these. ``simulate --transport grpc`` uses
``add_simulate_options`` (its spec: ``experiments.grpc_run.grpc_spec``; transport/
imports nothing from experiments/). Torch is imported only by
the commands that train (``server``, ``site``, ``simulate``), not by ``keygen``; nothing
heavy (cryptography, gRPC, torch) is imported before the arguments are parsed.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmap_secure.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

COMMANDS = ("server", "site", "keygen")


def add_commands(sub: Any) -> None:
    """Add the three subcommands to an ``argparse`` subparsers object."""
    for name, text in (
        ("server", "run the aggregation server of a deployment"),
        ("site", "run one site of a deployment (outbound connections only)"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("--config", type=Path, required=True, help=f"{name}.toml")
        parser.add_argument(
            "--insecure",
            action="store_true",
            help="confirm plaintext gRPC (also needs insecure = true in the file); local use only",
        )
    keygen = sub.add_parser("keygen", help="create identity keys, certificates and the roster")
    what = keygen.add_mutually_exclusive_group(required=True)
    what.add_argument("--sites", help="comma-separated site ids: a whole test consortium")
    what.add_argument("--identity", type=Path, help="write one site identity key to this file")
    what.add_argument("--ca", action="store_true", help="coordinator: CA + server certificate")
    what.add_argument("--site", help="on a site's machine: its keys and a certificate request")
    what.add_argument("--sign", type=Path, help="CA: sign a site's site.csr (needs --ca-dir)")
    what.add_argument("--roster", type=Path, help="add a site's identity key (needs --add)")
    keygen.add_argument("--ca-dir", type=Path, help="the CA folder (ca.pem, ca.key) for --sign")
    keygen.add_argument("--add", help="SITE=HEX public identity key, for --roster")
    keygen.add_argument(
        "--out",
        type=Path,
        default=Path("pki"),
        help="output folder (--sites, --ca, --site) or certificate file (--sign)",
    )
    keygen.add_argument(
        "--server-host",
        action="append",
        help="host name or IP in the server certificate (repeatable; default localhost)",
    )


def add_simulate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transport",
        choices=["inprocess", "grpc"],
        default="inprocess",
        help="grpc: the server here, one process per site on 127.0.0.1",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="grpc transport without TLS (local only)"
    )
    parser.add_argument(
        "--site-state",
        type=Path,
        help="keep one state folder (privacy ledger) per site under DIR/<site>, across runs "
        "(default: fresh ledgers under OUT/sites/, a budget per run)",
    )


def run_command(args: argparse.Namespace, console: Console) -> bool:
    """Run ``server``, ``site`` or ``keygen``; False if ``args.command`` is another command."""
    if args.command not in COMMANDS:
        return False
    _log_to(console)
    if args.command == "keygen":
        _keygen(args, console)
        return True
    from fedmap_secure.transport.processes import run_server, run_site

    if args.command == "server":
        run_server(args.config, insecure=args.insecure)
    else:
        run_site(args.config, insecure=args.insecure)
    return True


def _log_to(console: Console) -> None:
    """One log line per event (round progress, drops, epsilon spent): rich on a terminal,
    plain timestamped lines otherwise (log files)."""
    if console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=Console(stderr=True), show_path=False)
        logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def _keygen(args: argparse.Namespace, console: Console) -> None:
    from fedmap_secure.transport.keygen import keygen_consortium, keygen_identity, keygen_step

    if args.ca or args.site or args.sign or args.roster:
        for line in keygen_step(args):
            console.print(line)
        return
    if args.identity is not None:
        public = keygen_identity(args.identity)
        console.print(f"wrote {args.identity} (mode 0600); roster entry public key: {public}")
        return
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    if len(sites) < 2:
        raise ConfigError("--sites needs at least two site ids")
    hosts = args.server_host or ["localhost", "127.0.0.1"]
    console.print(CENTRAL_KEYS_WARNING)
    for line in keygen_consortium(args.out, sites, hosts):
        console.print(line)


CENTRAL_KEYS_WARNING = (
    "WARNING: --sites makes every site's identity key and TLS key on this machine: whoever "
    "holds this folder can impersonate every hospital. Use it for tests and single-machine "
    "trials only; in a deployment each site runs `fedmap-secure keygen --identity` itself and "
    "only public keys and certificate requests leave it (DEPLOYMENT.md, multi-machine)."
)
