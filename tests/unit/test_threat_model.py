"""threat_model/THREAT_MODEL.md stays true: every row leads to existing code and tests.

The threat table is parsed from the markdown; for each row the listed test
node ids must name a test function (or Class::method) defined in the file
(checked with ``ast``, no pytest collection), each code path must exist and
any ``::symbol`` be defined at its top level, and each SPEC section must exist
in protocol/SPEC.md. The known attack classes and out-of-scope items the
issue lists must each have a row, and SPEC.md must point back here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THREAT_MODEL = ROOT / "threat_model" / "THREAT_MODEL.md"
SPEC = ROOT / "protocol" / "SPEC.md"
COLUMNS = ["ID", "Threat", "Defence", "Code", "Tests", "SPEC"]


@dataclass(frozen=True)
class Row:
    ident: str
    threat: str
    defence: str
    code: tuple[str, ...]
    tests: tuple[str, ...]
    spec: tuple[str, ...]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _items(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell))


def parse_table(text: str) -> list[Row]:
    """Rows of the table under the '## Threat table' heading."""
    section = text.split("\n## Threat table\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert _cells(lines[0]) == COLUMNS, _cells(lines[0])
    rows = []
    for line in lines[2:]:
        cells = _cells(line)
        assert len(cells) == len(COLUMNS), line
        ident, threat, defence, code, tests, spec = cells
        sections = () if spec == "—" else tuple(re.findall(r"§(\d+(?:\.\d+)?)", spec))
        rows.append(Row(ident, threat, defence, _items(code), _items(tests), sections))
    return rows


@cache
def rows() -> list[Row]:
    return parse_table(THREAT_MODEL.read_text(encoding="utf-8"))


@cache
def _defined(path: Path) -> frozenset[str]:
    """Top-level names, and Class::method names, defined in a Python file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
        if isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


def missing_test(node_id: str) -> str | None:
    """Why ``node_id`` does not name an existing test, or None if it does."""
    path, _, name = node_id.partition("::")
    file = ROOT / path
    if not (path.startswith("tests/") and path.endswith(".py") and file.is_file()):
        return f"{node_id}: no test file {path}"
    test_name = name.split("[", 1)[0]
    if not test_name.split("::")[-1].startswith("test_"):
        return f"{node_id}: not a test name"
    if test_name not in _defined(file):
        return f"{node_id}: no test {test_name} in {path}"
    return None


def missing_code(ref: str) -> str | None:
    path, _, symbol = ref.partition("::")
    file = ROOT / path
    if not file.exists():
        return f"{ref}: no such path"
    if symbol and symbol not in _defined(file):
        return f"{ref}: {symbol} is not defined in {path}"
    return None


def spec_sections() -> set[str]:
    text = SPEC.read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, flags=re.MULTILINE))


def test_table_has_unique_ids_and_every_row_has_code_tests_and_a_defence() -> None:
    ids = [r.ident for r in rows()]
    assert len(ids) >= 30
    assert len(ids) == len(set(ids))
    for row in rows():
        assert re.fullmatch(r"[SKPTO]\d+", row.ident), row.ident
        assert row.code, f"{row.ident}: no code"
        assert row.tests, f"{row.ident}: no test"
        assert len(row.defence) > 20, f"{row.ident}: no defence"


def test_every_listed_test_exists() -> None:
    problems = [p for r in rows() for t in r.tests if (p := missing_test(t))]
    assert not problems, "\n".join(problems)


def test_every_listed_code_path_exists() -> None:
    problems = [p for r in rows() for c in r.code if (p := missing_code(c))]
    assert not problems, "\n".join(problems)


def test_every_cited_spec_section_exists() -> None:
    known = spec_sections()
    assert {"1", "2", "6.1", "6.5", "12"} <= known
    problems = [f"{r.ident}: §{s}" for r in rows() for s in r.spec if s not in known]
    assert not problems, problems


@pytest.mark.parametrize(
    "attack",
    [
        "Fake dropouts",
        "Key substitution",
        "Sybil sites",
        "Model inconsistency",
        "Trap weights",
        "Replay",
        "Weak mask generator",
        "Nonce reuse",
        "Encoding wrap-around",
    ],
)
def test_every_known_attack_class_has_a_row(attack: str) -> None:
    assert any(f"**{attack}" in r.threat for r in rows() if r.ident.startswith("K")), attack


@pytest.mark.parametrize(
    "item",
    [
        "Poisoning by malicious sites",
        "Disaggregation across many rounds",
        "Side channels and traffic analysis",
        "A compromised site's own data",
    ],
)
def test_every_out_of_scope_item_has_a_row_with_its_residual_risk(item: str) -> None:
    matching = [r for r in rows() if r.ident.startswith("O") and f"**{item}" in r.threat]
    assert matching, item
    assert "Out of scope" in matching[0].defence or "out of scope" in matching[0].threat


def test_spec_and_threat_model_agree_and_point_at_each_other() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    model = THREAT_MODEL.read_text(encoding="utf-8")
    assert "threat_model/THREAT_MODEL.md" in spec
    assert "protocol/SPEC.md" in model
    for condition in ("2t > h + c", "t - c >= 2", "h - d >= t", "floor(corrupt_fraction"):
        assert condition in spec, condition
        assert condition in model, condition
    assert "client-level" in model.lower()
    assert "c_max honest shares" in model  # the worst case the client-level noise covers
    assert "does **not** hide whether a site took part" in model
    assert "### 9.1 Client-level DP encoding" in spec


def test_the_parser_and_checks_can_fail() -> None:
    bad = (
        "intro\n## Threat table\n\n"
        "| ID | Threat | Defence | Code | Tests | SPEC |\n|---|---|---|---|---|---|\n"
        "| X1 | t | a long enough defence text | `fedmap_secure/nope.py` "
        "| `tests/unit/test_threat_model.py::test_gone` | — |\n"
    )
    (row,) = parse_table(bad)
    assert missing_test(row.tests[0]) is not None
    assert missing_code(row.code[0]) is not None
    assert missing_test("tests/unit/test_threat_model.py::test_every_listed_test_exists") is None
    assert missing_code("fedmap_secure/transcript/verify.py::verify_chain") is None
    assert missing_code("fedmap_secure/transcript/verify.py::no_such_symbol") is not None
