"""The sweep grid: a TOML file expanded into ``RunSpec`` values with stable ids.

A sweep file holds a ``[sweep]`` table (shared settings) and one or more
``[[sweep.grid]]`` tables; each grid is the cross product of its lists and the
sweep is the union of the grids (duplicates removed, first occurrence kept)::

    [sweep]
    delta = 1e-5            # per-site DP delta (each site uses min(delta, 1/(10 n_k)))
    rounds = 20             # optional: overrides the simulation config
    epochs = 10             # optional: local epochs per round
    simulation_config = "sim.toml"   # optional, relative to this file

    [[sweep.grid]]
    datasets = ["heart", "thyroid"]
    methods = ["local", "fedavg", "fedprox", "fedmap", "pooled"]
    epsilons = [1, 4, "none"]       # "none": no differential privacy
    secure_aggregation = [true, false]
    seeds = [0, 1, 2]

Collapsed axes (so the grid never runs the same experiment twice):
``pooled`` (the centralised, non-private upper bound) runs only with no DP and
no secure aggregation. ``local`` releases nothing (no aggregate, no score), so
the engine trains it without DP noise at every budget (epsilon spent 0) and
without aggregation: it runs once, with no DP and secure aggregation off, and
the report draws it as a flat reference across epsilon.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap_secure.errors import ConfigError

SPEC_VERSION = 1
NO_DP = "none"


class SweepMethod(enum.Enum):
    """A method of the comparison; ``pooled`` is the centralised reference, not federated."""

    LOCAL = "local"
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDMAP = "fedmap"
    POOLED = "pooled"


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything that determines one run (the run id is a digest of it)."""

    dataset: str
    method: SweepMethod
    epsilon: float | None
    delta: float
    secure_aggregation: bool
    seed: int
    rounds: int | None = None
    epochs: int | None = None
    simulation_toml: str | None = None

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("run spec: dataset must be non-empty")
        if self.epsilon is not None and not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"run spec: epsilon must be finite and > 0, got {self.epsilon!r}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"run spec: delta must be in (0, 1), got {self.delta!r}")
        if isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"run spec: seed must be an int >= 0, got {self.seed!r}")
        for name in ("rounds", "epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"run spec: {name} must be an int >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "dataset": self.dataset,
            "method": self.method.value,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "secure_aggregation": self.secure_aggregation,
            "seed": self.seed,
            "rounds": self.rounds,
            "epochs": self.epochs,
            "simulation_toml": self.simulation_toml,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        if data.get("version") != SPEC_VERSION:
            raise ConfigError(f"run spec version {data.get('version')!r} is not {SPEC_VERSION}")
        try:
            return cls(
                dataset=str(data["dataset"]),
                method=SweepMethod(data["method"]),
                epsilon=None if data["epsilon"] is None else float(data["epsilon"]),
                delta=float(data["delta"]),
                secure_aggregation=bool(data["secure_aggregation"]),
                seed=int(data["seed"]),
                rounds=data.get("rounds"),
                epochs=data.get("epochs"),
                simulation_toml=data.get("simulation_toml"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"malformed run spec: {exc}") from None

    @property
    def run_id(self) -> str:
        """``<dataset>-<method>-eps<e|inf>-<sa|plain>-s<seed>-<12 hex of sha256(spec)>``."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        eps = "inf" if self.epsilon is None else f"{self.epsilon:g}"
        agg = "sa" if self.secure_aggregation else "plain"
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.dataset).strip("_") or "data"
        return f"{slug}-{self.method.value}-eps{eps}-{agg}-s{self.seed}-{digest}"


_GRID_KEYS = {"datasets", "methods", "epsilons", "secure_aggregation", "seeds"}
_SWEEP_KEYS = {"delta", "rounds", "epochs", "simulation_config", "grid"}


def _list(grid: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = grid.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty list")
    return value


def _epsilon(value: object, where: str) -> float | None:
    if value == NO_DP:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}.epsilons: {value!r} is neither a number nor {NO_DP!r}")
    return float(value)


def _optional_int(table: Mapping[str, Any], key: str) -> int | None:
    value = table.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"sweep.{key} must be an integer, got {value!r}")
    return value


def expand_grid(
    grid: Mapping[str, Any], *, delta: float, shared: Mapping[str, Any], where: str
) -> list[RunSpec]:
    """The cross product of one grid, with the collapsed axes of the module docstring."""
    unknown = sorted(set(grid) - _GRID_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    datasets = [str(d) for d in _list(grid, "datasets", where)]
    try:
        methods = [SweepMethod(m) for m in _list(grid, "methods", where)]
    except ValueError as exc:
        raise ConfigError(f"{where}.methods: {exc}") from None
    epsilons = [_epsilon(e, where) for e in _list(grid, "epsilons", where)]
    secagg = _list(grid, "secure_aggregation", where)
    if not all(isinstance(s, bool) for s in secagg):
        raise ConfigError(f"{where}.secure_aggregation must be a list of true/false")
    seeds = _list(grid, "seeds", where)
    specs = []
    for dataset in datasets:
        for method in methods:
            flat = method in (SweepMethod.POOLED, SweepMethod.LOCAL)
            for eps in [None] if flat else epsilons:
                aggs = [False] if flat else secagg
                for sa in aggs:
                    for seed in seeds:
                        specs.append(
                            RunSpec(
                                dataset=dataset,
                                method=method,
                                epsilon=eps,
                                delta=delta,
                                secure_aggregation=sa,
                                seed=seed,
                                **shared,
                            )
                        )
    return specs


def unique(specs: Iterable[RunSpec]) -> list[RunSpec]:
    seen: dict[str, RunSpec] = {}
    for spec in specs:
        seen.setdefault(spec.run_id, spec)
    return list(seen.values())


def parse_sweep(text: str, *, base_dir: Path, source: str = "<sweep>") -> list[RunSpec]:
    """Parse sweep TOML into the ordered, de-duplicated list of runs."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    sweep = doc.get("sweep")
    if set(doc) != {"sweep"} or not isinstance(sweep, dict):
        raise ConfigError(f"{source}: expected exactly one [sweep] table, got {sorted(doc)}")
    unknown = sorted(set(sweep) - _SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown keys in [sweep]: {unknown}")
    grids = sweep.get("grid")
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"{source}: at least one [[sweep.grid]] table is required")
    delta = sweep.get("delta", 1e-5)
    if isinstance(delta, bool) or not isinstance(delta, int | float):
        raise ConfigError(f"{source}: sweep.delta must be a number")
    shared: dict[str, Any] = {
        "rounds": _optional_int(sweep, "rounds"),
        "epochs": _optional_int(sweep, "epochs"),
        "simulation_toml": _simulation_text(sweep.get("simulation_config"), base_dir),
    }
    specs: list[RunSpec] = []
    for i, grid in enumerate(grids):
        specs += expand_grid(grid, delta=float(delta), shared=shared, where=f"sweep.grid[{i}]")
    return unique(specs)


def _simulation_text(path: object, base_dir: Path) -> str | None:
    """The simulation TOML text (embedded in every spec so runs are self-contained)."""
    if path is None:
        return None
    if not isinstance(path, str):
        raise ConfigError("sweep.simulation_config must be a path string")
    full = base_dir / path
    try:
        return full.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read simulation config {str(full)!r}: {exc.strerror}") from None


def load_sweep(path: Path) -> list[RunSpec]:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {str(path)!r}: {exc.strerror}") from None
    return parse_sweep(text, base_dir=path.parent, source=str(path))
