"""secagg, client_dp and crypto stay sans-I/O.

No torch, grpc, clock, filesystem, pickle or raw primitives.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECAGG = sorted((ROOT / "fedmap_secure" / "secagg").glob("*.py"))
CLIENT_DP = sorted((ROOT / "fedmap_secure" / "client_dp").glob("*.py"))
FORBIDDEN = {
    "time",
    "datetime",
    "pathlib",
    "io",
    "socket",
    "random",
    "pickle",
    "torch",
    "grpc",
    "cryptography",
    "nacl",
    "hashlib",
    "hmac",
    "secrets",
}


def test_importing_secagg_client_dp_and_crypto_leaves_torch_and_grpc_unloaded() -> None:
    code = (
        "import sys, fedmap_secure.secagg, fedmap_secure.crypto\n"
        "import fedmap_secure.secagg.inprocess, fedmap_secure.client_dp\n"
        "bad = sorted(m for m in ('torch', 'grpc', 'opacus') if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("path", SECAGG + CLIENT_DP, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_secagg_modules_import_nothing_forbidden(path: Path) -> None:
    names: set[str] = set()
    tree = ast.parse(path.read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & FORBIDDEN, f"{path.name} imports {names & FORBIDDEN}"
    calls = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not calls & {"open", "print", "input", "exec", "eval"}


@pytest.mark.parametrize("path", CLIENT_DP, ids=lambda p: p.name)
def test_client_dp_does_not_reach_into_io_layers(path: Path) -> None:
    tree = ast.parse(path.read_text("utf-8"))
    modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    io_layers = ("training", "transport", "experiments", "cli")
    bad = {m for m in modules if m.split(".")[:2] in [["fedmap_secure", x] for x in io_layers]}
    assert not bad, f"{path.name} imports {bad}"
