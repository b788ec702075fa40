"""The CLI answers --help and argument errors before importing anything heavy.

Each check runs in a fresh interpreter (a subprocess): the test process itself
has long imported torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch",
    "opacus",
    "dp_accounting",
    "ray",
    "grpc",
    "cryptography",
    "matplotlib",
    "sklearn",
    "scipy",
)

_PROBE = """
import contextlib, io, json, sys
from fedmap_secure.cli import main
err = io.StringIO()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
print(json.dumps({"code": code, "heavy": heavy, "stderr": err.getvalue()}))
"""


def _run(*argv: str) -> dict[str, object]:
    probe = _PROBE.replace("json.loads(HEAVY)", repr(list(HEAVY)))
    done = subprocess.run(
        [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("simulate", "--help"),
        ("sweep", "--help"),
        ("report", "--help"),
        ("keygen", "--help"),
    ],
)
def test_help_imports_nothing_heavy(argv: tuple[str, ...]) -> None:
    result = _run(*argv)
    assert result["code"] == 0
    assert result["heavy"] == []


@pytest.mark.parametrize(
    "argv",
    [
        ("simulate",),  # --dataset missing
        ("simulate", "--dataset", "heart", "--rounds", "many"),
        ("simulate", "--dataset", "heart", "--config", "/nonexistent/run.toml"),
        ("simulate", "--dataset", "heart", "--transport", "grpc", "--no-secagg"),
        ("report",),
        ("no-such-command",),
    ],
)
def test_refusals_print_one_line_before_heavy_imports(argv: tuple[str, ...]) -> None:
    result = _run(*argv)
    assert result["code"] == 2
    assert result["heavy"] == []
    stderr = str(result["stderr"])
    assert stderr.count("\n") == 1
    assert "error:" in stderr


def test_importing_the_package_and_config_stays_light() -> None:
    probe = (
        "import sys, fedmap_secure, fedmap_secure.config; "
        "fedmap_secure.config.load_config(); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
