"""The server/site/keygen subcommands parse and dispatch (keygen end to end)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from rich.console import Console

from fedmap_secure.errors import ConfigError
from fedmap_secure.transport import commands, pki


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _console() -> Console:
    return Console(file=io.StringIO())


def test_keygen_consortium(tmp_path: Path) -> None:
    args = _parse(["keygen", "--sites", "a1,b2,c3", "--out", str(tmp_path / "pki")])
    console = _console()
    assert commands.run_command(args, console)
    assert pki.load_roster(tmp_path / "pki" / "roster.json").sites == ("a1", "b2", "c3")
    assert isinstance(console.file, io.StringIO)
    printed = " ".join(console.file.getvalue().split())
    assert "WARNING: --sites makes every site's identity key" in printed


def test_keygen_identity(tmp_path: Path) -> None:
    console = _console()
    assert commands.run_command(_parse(["keygen", "--identity", str(tmp_path / "id.pem")]), console)
    public = pki.load_identity(tmp_path / "id.pem").public.hex()
    assert public in console.file.getvalue()  # type: ignore[attr-defined]


def test_keygen_needs_two_sites(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least two"):
        commands.run_command(
            _parse(["keygen", "--sites", "a1", "--out", str(tmp_path)]), _console()
        )


def test_server_and_site_arguments(tmp_path: Path) -> None:
    args = _parse(["site", "--config", "site.toml", "--insecure"])
    assert (args.config, args.insecure) == (Path("site.toml"), True)
    args = _parse(["server", "--config", "server.toml"])
    assert args.insecure is False
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="cannot read"):
        commands.run_command(_parse(["server", "--config", str(missing)]), _console())


def test_other_commands_are_not_handled() -> None:
    assert not commands.run_command(argparse.Namespace(command="simulate"), _console())


def test_simulate_options() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset")
    commands.add_simulate_options(parser)
    args = parser.parse_args(["--dataset", "heart", "--transport", "grpc", "--insecure"])
    from fedmap_secure.experiments.grpc_run import grpc_spec

    spec = grpc_spec(args, stage_timeout=5.0)
    assert (spec.dataset_spec, spec.insecure, spec.stage_timeout) == ("heart", True, 5.0)


def test_keygen_several_machines_steps(tmp_path: Path) -> None:
    """--ca at the coordinator, --site on each site's machine, --sign and --roster --add back."""
    run = commands.run_command
    assert run(_parse(["keygen", "--ca", "--out", str(tmp_path / "pki")]), _console())
    for site in ("a1", "b2"):
        home = tmp_path / site
        console = _console()
        assert run(_parse(["keygen", "--site", site, "--out", str(home)]), console)
        public = console.file.getvalue().split()[-1]  # type: ignore[attr-defined]
        assert public == pki.load_identity(home / "identity.pem").public.hex()
        sign = ["keygen", "--sign", str(home / "site.csr"), "--out", str(home / "site.pem")]
        with pytest.raises(ConfigError, match="--ca-dir"):
            run(_parse(sign), _console())
        assert run(_parse([*sign, "--ca-dir", str(tmp_path / "pki")]), _console())
        roster = ["keygen", "--roster", str(tmp_path / "pki" / "roster.json")]
        assert run(_parse([*roster, "--add", f"{site}={public}"]), _console())
    assert pki.load_roster(tmp_path / "pki" / "roster.json").sites == ("a1", "b2")
