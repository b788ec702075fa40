"""Layering: transport/ only moves messages, runtime/ holds what a run does; neither imports
experiments/ (which composes runs and reports), not even for type annotations."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "fedmap_secure"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("layer", ["transport", "runtime"])
def test_layer_imports_nothing_from_experiments(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files
    offending = {
        str(f.relative_to(PACKAGE)): sorted(
            m for m in _imports(f) if m.startswith("fedmap_secure.experiments")
        )
        for f in files
    }
    assert {f: m for f, m in offending.items() if m} == {}
