from __future__ import annotations

import math

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import (
    Roster,
    SecAggConfig,
    check_site_id,
    check_threat_model,
    derive_parameters,
    hypergeometric_bound,
    neighbourhood_bounds,
)


def _exact_tail(population: int, marked: int, draws: int, above: int) -> float:
    total = math.comb(population, draws)
    return (
        sum(
            math.comb(marked, x) * math.comb(population - marked, draws - x)
            for x in range(above + 1, min(marked, draws) + 1)
        )
        / total
    )


@pytest.mark.parametrize(("population", "marked", "draws"), [(30, 5, 10), (50, 20, 12), (9, 3, 4)])
@pytest.mark.parametrize("epsilon", [1e-1, 1e-3, 1e-6])
def test_hypergeometric_bound_is_the_smallest_valid_quantile(
    population: int, marked: int, draws: int, epsilon: float
) -> None:
    c = hypergeometric_bound(population=population, marked=marked, draws=draws, epsilon=epsilon)
    assert _exact_tail(population, marked, draws, c) <= epsilon * (1 + 1e-9)
    if c > 0:
        assert _exact_tail(population, marked, draws, c - 1) > epsilon


def test_small_consortia_use_the_complete_graph() -> None:
    k, t = derive_parameters(10, 0.1, 0.1)
    assert (k, t) == (9, 6)  # 2t > 10 + 1 and 10 - 1 >= t
    config = SecAggConfig.for_threat_model(n=10, dropout_fraction=0.1, corrupt_fraction=0.1)
    assert config.complete_graph
    assert config.protocol_name.startswith("SecAgg (Bonawitz")


def test_large_consortia_get_a_sparse_graph_meeting_both_conditions() -> None:
    n, delta, gamma = 1000, 0.05, 0.05
    k, t = derive_parameters(n, delta, gamma)
    assert k % 2 == 0
    assert k < n - 1
    c, d = neighbourhood_bounds(
        n=n, k=k, dropout_fraction=delta, corrupt_fraction=gamma, security_parameter=40
    )
    assert 2 * t > k + 1 + c
    assert k + 1 - d >= t
    quorum = SecAggConfig(n=n, k=k, t=t, dropout_fraction=delta, corrupt_fraction=gamma).quorum
    assert quorum == (n + 50) // 2 + 1
    assert n - 50 >= quorum
    # k is minimal: k - 2 fails one of the conditions for every t
    c2, d2 = neighbourhood_bounds(
        n=n, k=k - 2, dropout_fraction=delta, corrupt_fraction=gamma, security_parameter=40
    )
    assert (k - 1 + c2) // 2 + 1 > k - 1 - d2
    assert SecAggConfig.for_threat_model(
        n=n, dropout_fraction=delta, corrupt_fraction=gamma
    ).protocol_name.startswith("SecAgg+")


@pytest.mark.parametrize(
    ("n", "delta", "gamma"), [(10, 0.5, 0.0), (10, 0.3, 0.4), (100, 0.45, 0.2), (5, 0.0, 0.99)]
)
def test_threat_models_without_a_private_and_live_threshold_are_refused(
    n: int, delta: float, gamma: float
) -> None:
    with pytest.raises(ConfigError, match="no \\(k, t\\)"):
        derive_parameters(n, delta, gamma)


def test_config_refuses_thresholds_outside_the_threat_model() -> None:
    with pytest.raises(ConfigError, match="not private"):
        SecAggConfig(n=10, k=9, t=5)  # 2t must exceed n
    with pytest.raises(ConfigError, match="not private"):
        SecAggConfig(n=10, k=9, t=6, corrupt_fraction=0.2)  # 2t must exceed n + 2
    with pytest.raises(ConfigError, match="not live"):
        SecAggConfig(n=10, k=9, t=9, dropout_fraction=0.2)
    SecAggConfig(n=10, k=9, t=8, dropout_fraction=0.2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 1, "k": 0, "t": 1},
        {"n": 10, "k": 3, "t": 3},  # odd sparse k
        {"n": 10, "k": 10, "t": 6},
        {"n": 10, "k": 9, "t": 11},
        {"n": 10, "k": 9, "t": 6, "bits": 8},
        {"n": 10, "k": 9, "t": 6, "bits": 65},
        {"n": 10, "k": 9, "t": 6, "graph_seed": b"short"},
        {"n": 10, "k": 9, "t": 6, "dropout_fraction": 1.0},
        {"n": 10, "k": 9, "t": 6, "corrupt_fraction": -0.1},
        {"n": 10, "k": 9, "t": True},
    ],
)
def test_config_validates_every_field(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SecAggConfig(**kwargs)  # type: ignore[arg-type]


def test_check_threat_model_rejects_bad_security_parameter() -> None:
    with pytest.raises(ConfigError, match="security_parameter"):
        check_threat_model(
            n=10, k=9, t=6, dropout_fraction=0.0, corrupt_fraction=0.0, security_parameter=5
        )


def test_roster_is_sorted_validated_and_digest_changes_with_keys() -> None:
    roster = Roster.from_mapping({"b": bytes(32), "a": b"\x01" * 32})
    assert roster.sites == ("a", "b")
    assert roster.public_key("a") == b"\x01" * 32
    assert "a" in roster
    assert "c" not in roster
    with pytest.raises(ConfigError, match="not on the roster"):
        roster.public_key("c")
    other = Roster.from_mapping({"b": bytes(32), "a": b"\x02" * 32})
    assert roster.digest() != other.digest()
    with pytest.raises(ConfigError, match="32 bytes"):
        Roster.from_mapping({"a": b"x", "b": bytes(32)})
    with pytest.raises(ConfigError, match="at least 2"):
        Roster.from_mapping({"a": bytes(32)})


@pytest.mark.parametrize("bad", ["", "@server", "-x", "a b", "x" * 65, "é"])
def test_site_ids_are_restricted(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid site id"):
        check_site_id(bad)


def test_config_digest_binds_every_parameter() -> None:
    base = SecAggConfig(n=10, k=9, t=6)
    variants = [
        SecAggConfig(n=10, k=9, t=7),
        SecAggConfig(n=10, k=9, t=6, bits=64),
        SecAggConfig(n=10, k=9, t=6, graph_seed=b"\x01" * 32),
        SecAggConfig(n=11, k=10, t=6),
        SecAggConfig(n=10, k=9, t=6, dropout_fraction=0.1),
        SecAggConfig(n=10, k=9, t=6, corrupt_fraction=0.1),
        SecAggConfig(n=10, k=9, t=6, security_parameter=64),
    ]
    assert len({base.digest(), *(v.digest() for v in variants)}) == 8
