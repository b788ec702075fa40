from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedmap_secure.config.privacy import ClientDpMechanism
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep.spec import (
    CLIENT_MECHANISMS,
    RunSpec,
    SweepMethod,
    load_sweep,
    parse_sweep,
)

GRID = """
[sweep]
delta = 1e-4
rounds = 3
[[sweep.grid]]
datasets = ["heart", "thyroid"]
methods = ["local", "fedavg", "fedprox", "fedmap", "pooled"]
epsilons = [1, 4.0, "none"]
secure_aggregation = [true, false]
seeds = [0, 1]
"""


def _parse(text: str) -> list[RunSpec]:
    return parse_sweep(text, base_dir=Path("."))


def test_cross_product_with_collapsed_axes() -> None:
    specs = _parse(GRID)
    # per dataset and seed: local 1; fed* 3 eps x 2 agg x 3 methods; pooled 1
    assert len(specs) == 2 * 2 * (1 + 18 + 1)
    pooled = [s for s in specs if s.method is SweepMethod.POOLED]
    assert {(s.epsilon, s.secure_aggregation) for s in pooled} == {(None, False)}
    local = [s for s in specs if s.method is SweepMethod.LOCAL]
    assert {(s.epsilon, s.secure_aggregation) for s in local} == {(None, False)}
    fedmap = [s for s in specs if s.method is SweepMethod.FEDMAP and s.dataset == "heart"]
    assert len(fedmap) == 3 * 2 * 2
    assert all(s.delta == 1e-4 and s.rounds == 3 and s.epochs is None for s in specs)


def test_ids_are_unique_stable_and_readable() -> None:
    specs = _parse(GRID)
    ids = [s.run_id for s in specs]
    assert len(set(ids)) == len(ids)
    assert ids == [s.run_id for s in _parse(GRID)]
    spec = RunSpec(
        dataset="heart",
        method=SweepMethod.FEDMAP,
        epsilon=1.0,
        delta=1e-5,
        secure_aggregation=True,
        seed=3,
    )
    # Golden: an id change silently breaks resuming existing sweep directories.
    assert spec.run_id == GOLDEN_ID
    assert RunSpec.from_dict(spec.to_dict()) == spec


GOLDEN_ID = "heart-fedmap-eps1-sa-s3-77e9670a9f5d"


def test_any_change_changes_the_id() -> None:
    base = RunSpec(
        dataset="heart",
        method=SweepMethod.FEDAVG,
        epsilon=None,
        delta=1e-5,
        secure_aggregation=False,
        seed=0,
    )
    variants = [
        RunSpec(**{**base.__dict__, "rounds": 5}),
        RunSpec(**{**base.__dict__, "epochs": 2}),
        RunSpec(**{**base.__dict__, "delta": 1e-4}),
        RunSpec(**{**base.__dict__, "simulation_toml": "[simulation]\nrounds = 2\n"}),
    ]
    assert len({v.run_id for v in [base, *variants]}) == 5


def test_grids_union_without_duplicates() -> None:
    text = GRID + GRID.split("[sweep]\ndelta = 1e-4\nrounds = 3\n", 1)[1]
    assert len(_parse(text)) == len(_parse(GRID))


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ('epsilons = ["inf"]', "neither a number"),
        ("epsilons = [-1]", "epsilon must be finite and > 0"),
        ('methods = ["fedyogi"]', "methods"),
        ("seeds = []", "seeds must be a non-empty list"),
        ("secure_aggregation = [1]", "true/false"),
        ("colour = [1]", "unknown keys"),
    ],
)
def test_bad_grids_are_refused_by_name(bad: str, fragment: str) -> None:
    key = bad.split(" ", 1)[0]
    lines = [ln for ln in GRID.splitlines() if not ln.startswith(key + " ")]
    with pytest.raises(ConfigError, match=fragment):
        _parse("\n".join([*lines, bad]))


def test_simulation_config_is_embedded(tmp_path: Path) -> None:
    (tmp_path / "sim.toml").write_text("[simulation]\nrounds = 2\n")
    (tmp_path / "s.toml").write_text(GRID.replace("rounds = 3", 'simulation_config = "sim.toml"'))
    specs = load_sweep(tmp_path / "s.toml")
    assert specs[0].simulation_toml == "[simulation]\nrounds = 2\n"
    (tmp_path / "s.toml").write_text(GRID.replace("rounds = 3", 'simulation_config = "no.toml"'))
    with pytest.raises(ConfigError, match=r"no\.toml"):
        load_sweep(tmp_path / "s.toml")


# --- client-level DP axis -------------------------------------------------------------

# Pinned before the client-level keys existed: an old spec must keep its id (resuming sweeps).
OLD_SPEC = {
    "version": 1,
    "dataset": "thyroid",
    "method": "fedprox",
    "epsilon": None,
    "delta": 1e-5,
    "secure_aggregation": True,
    "seed": 2,
    "rounds": 20,
    "epochs": 10,
    "simulation_toml": "[simulation]\nrounds = 2\n",
}
OLD_ID = "thyroid-fedprox-epsinf-sa-s2-a5ae4f22a103"

CLIENT_GRID = """
[sweep]
client_delta = 1e-4
client_mechanism = "skellam"
[[sweep.grid]]
datasets = ["heart"]
methods = ["local", "fedavg", "fedmap", "pooled"]
epsilons = [1, "none"]
client_epsilons = [2, 8.0, "none"]
secure_aggregation = [true, false]
seeds = [0, 1]
"""


def test_a_spec_without_client_dp_keeps_its_id() -> None:
    spec = RunSpec.from_dict(OLD_SPEC)
    assert spec.client_epsilon is None
    assert spec.to_dict() == OLD_SPEC  # no client keys added
    assert spec.run_id == OLD_ID
    assert _parse(GRID)[0].to_dict().keys() == OLD_SPEC.keys()


def test_client_epsilon_enters_the_id_and_round_trips() -> None:
    base = RunSpec.from_dict(OLD_SPEC)
    spec = RunSpec.from_dict({**OLD_SPEC, "client_epsilon": 4.0})
    assert spec.client_epsilon == 4.0
    assert spec.run_id.startswith("thyroid-fedprox-epsinf-ceps4-sa-s2-")
    assert spec.run_id != base.run_id
    full = RunSpec.from_dict(
        {**OLD_SPEC, "client_epsilon": 0.5, "client_delta": 1e-4, "client_mechanism": "skellam"}
    )
    assert full.client_mechanism == "skellam"
    assert RunSpec.from_dict(full.to_dict()) == full
    assert len({base.run_id, spec.run_id, full.run_id}) == 3


def test_client_epsilon_grid_collapses_axes() -> None:
    specs = _parse(CLIENT_GRID)
    # per seed: local 1, pooled 1; fedavg/fedmap: 2 eps x (2 client eps x SecAgg + none x 2 agg)
    assert len(specs) == 2 * (1 + 1 + 2 * 2 * (2 + 2))
    flat = [s for s in specs if s.method in (SweepMethod.LOCAL, SweepMethod.POOLED)]
    assert {s.client_epsilon for s in flat} == {None}
    client = [s for s in specs if s.client_epsilon is not None]
    assert {s.client_epsilon for s in client} == {2.0, 8.0}
    assert all(s.secure_aggregation for s in client)
    assert {(s.client_delta, s.client_mechanism) for s in client} == {(1e-4, "skellam")}
    rest = [s for s in specs if s.client_epsilon is None]
    assert {(s.client_delta, s.client_mechanism) for s in rest} == {(None, None)}
    # the "none" client runs are exactly the runs of the same grid without the axis
    plain = CLIENT_GRID.replace('client_epsilons = [2, 8.0, "none"]\n', "")
    assert {s.run_id for s in rest} == {s.run_id for s in _parse(plain)}


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"method": SweepMethod.LOCAL}, "aggregating method"),
        ({"method": SweepMethod.POOLED}, "aggregating method"),
        ({"secure_aggregation": False}, "secure_aggregation"),
        ({"client_epsilon": 0.0}, "client_epsilon must be finite"),
        ({"client_epsilon": math.inf}, "client_epsilon must be finite"),
        ({"client_delta": 1.0}, "client_delta must be in"),
        ({"client_epsilon": None, "client_delta": 1e-3}, "need a client_epsilon"),
        ({"client_mechanism": "laplace"}, "client_mechanism must be one of"),
    ],
)
def test_bad_client_specs_are_refused(changes: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {
        "dataset": "heart",
        "method": SweepMethod.FEDAVG,
        "epsilon": None,
        "delta": 1e-5,
        "secure_aggregation": True,
        "seed": 0,
        "client_epsilon": 1.0,
    }
    with pytest.raises(ConfigError, match=fragment):
        RunSpec(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ('client_epsilons = ["inf"]', r"client_epsilons: 'inf' is neither"),
        ("client_epsilons = []", "client_epsilons must be a non-empty list"),
        ('client_mechanism = "laplace"', "client_mechanism must be one of"),
        ('client_delta = "x"', "client_delta must be a number"),
    ],
)
def test_bad_client_settings_are_refused_by_name(bad: str, fragment: str) -> None:
    key = bad.split(" ", 1)[0]
    lines = [ln for ln in CLIENT_GRID.splitlines() if not ln.startswith(key + " ")]
    if key.startswith("client_epsilons"):
        lines.append(bad)
    else:
        lines.insert(lines.index("[sweep]") + 1, bad)
    with pytest.raises(ConfigError, match=fragment):
        _parse("\n".join(lines))


SWEEPS = Path(__file__).resolve().parents[2] / "benchmarks" / "sweeps"


def test_the_client_level_example_reuses_the_headline_no_dp_runs() -> None:
    specs = load_sweep(SWEEPS / "client_level.toml")
    assert len(specs) == 150  # 2 datasets x 3 methods x 5 client epsilons x 5 seeds
    headline = {s.run_id for s in load_sweep(SWEEPS / "headline.toml")}
    shared = [s for s in specs if s.run_id in headline]
    assert len(shared) == 30
    assert all(s.client_epsilon is None for s in shared)


def test_the_spec_knows_every_client_dp_mechanism() -> None:
    assert set(CLIENT_MECHANISMS) == {m.value for m in ClientDpMechanism}
