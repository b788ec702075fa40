from __future__ import annotations

from pathlib import Path

import pytest

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep.spec import RunSpec, SweepMethod, load_sweep, parse_sweep

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
