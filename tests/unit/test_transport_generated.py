"""The committed generated code must match what the .proto files produce today."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmap_secure.transport import regenerate


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is needed to regenerate")
    pytest.importorskip("mypy_protobuf", reason="mypy-protobuf is needed to regenerate stubs")
    regenerate.generate(tmp_path)
    fresh = _tree(tmp_path)
    committed = _tree(regenerate.GENERATED_ROOT)
    assert sorted(fresh) == sorted(committed), "generated file set differs; run regenerate"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, (
        f"stale generated code {stale}: run python -m fedmap_secure.transport.regenerate"
    )


def test_every_proto_file_is_generated() -> None:
    stems = {p.stem for p in regenerate.proto_files()}
    assert {"secagg", "service"} <= stems
    for stem in stems:
        assert (regenerate.GENERATED_ROOT / "v1" / f"{stem}_pb2.py").is_file()
        assert (regenerate.GENERATED_ROOT / "v1" / f"{stem}_pb2.pyi").is_file()
