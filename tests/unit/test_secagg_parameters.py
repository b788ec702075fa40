"""The (n, delta, gamma) -> (k, t) table of protocol/SPEC.md section 2, pinned and kept in step."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import (
    SecAggConfig,
    consistency_quorum,
    derive_parameters,
    disconnection_log2_bound,
)

SPEC = Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md"
MODELS = {"shipped": (0.25, 0.25), "milder": (0.1, 0.1)}


@pytest.mark.parametrize(
    ("n", "model", "k", "t"),
    [
        (4, "shipped", 3, 3),
        (10, "shipped", 9, 7),
        (100, "shipped", 76, 52),
        (1000, "shipped", 624, 417),
        (10, "milder", 9, 6),
        (100, "milder", 30, 21),
        (1000, "milder", 132, 89),
    ],
)
def test_pinned_rows(n: int, model: str, k: int, t: int) -> None:
    delta, gamma = MODELS[model]
    assert derive_parameters(n, delta, gamma) == (k, t)


def _spec_rows() -> list[tuple[int, str, str]]:
    text = SPEC.read_text("utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \| ([^|]+) \|$", text, re.MULTILINE)
    assert len(rows) >= 10, "the (k, t) table is missing from SPEC section 2"
    return [(int(n), a.strip(), b.strip()) for n, a, b in rows]


def _cell(n: int, delta: float, gamma: float) -> str:
    try:
        k, t = derive_parameters(n, delta, gamma)
    except ConfigError as exc:
        return "refused: state `max_colluding_sites`" if "rounds down" in str(exc) else "refused"
    q = consistency_quorum(n=n, t=t, corrupt_fraction=gamma)
    return f"{math.floor(gamma * n)}, ({k}, {t}), {q}"


def test_the_spec_table_is_what_derive_parameters_returns() -> None:
    for n, shipped, milder in _spec_rows():
        assert shipped == _cell(n, *MODELS["shipped"]), n
        assert milder == _cell(n, *MODELS["milder"]), n


def test_a_graph_that_may_split_the_honest_survivors_is_refused() -> None:
    """Bell et al.'s connectivity condition (SPEC section 2, condition 5)."""
    assert disconnection_log2_bound(n=180, k=18, removed=54) > -20
    with pytest.raises(ConfigError, match="graph may split"):
        SecAggConfig(n=180, k=18, t=19, corrupt_fraction=0.3, security_parameter=20)
    assert disconnection_log2_bound(n=1000, k=624, removed=500) == -math.inf
    assert disconnection_log2_bound(n=1000, k=132, removed=200) < -280
