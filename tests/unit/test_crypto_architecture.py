"""Structural rules of fedmap_secure.crypto: one primitives module, sans-I/O everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CRYPTO = Path(__file__).resolve().parents[2] / "fedmap_secure" / "crypto"
MODULES = sorted(CRYPTO.glob("*.py"))
PRIMITIVE_LIBRARIES = {"cryptography", "nacl", "hashlib", "hmac", "secrets"}
FORBIDDEN = {"time", "datetime", "pathlib", "io", "socket", "random", "pickle", "torch", "grpc"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _os_attributes(path: Path) -> set[str]:
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    }


def test_modules_found() -> None:
    assert {p.name for p in MODULES} >= {"_primitives.py", "shamir.py", "prg.py", "signing.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_only_primitives_module_imports_primitive_libraries(path: Path) -> None:
    used = _imports(path) & PRIMITIVE_LIBRARIES
    assert not used or path.name == "_primitives.py", f"{path.name} imports {used}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_filesystem_or_pickle(path: Path) -> None:
    assert not _imports(path) & FORBIDDEN
    assert _os_attributes(path) <= {"urandom"}, "os is only used for the os.urandom default"
    assert "open(" not in path.read_text("utf-8").replace("open_sealed(", "")
