"""The sweep grid: a TOML file expanded into ``RunSpec`` values with stable ids.

A sweep file holds a ``[sweep]`` table (shared settings) and one or more
``[[sweep.grid]]`` tables; each grid is the cross product of its lists and the
sweep is the union of the grids (duplicates removed, first occurrence kept)::

    [sweep]
    delta = 1e-5            # per-site DP delta (each site uses min(delta, 1/(10 n_k)))
    rounds = 20             # optional: overrides the simulation config
    epochs = 10             # optional: local epochs per round
    simulation_config = "sim.toml"   # optional, relative to this file
    client_delta = 1e-3     # optional: client-level DP delta (default: the config's)
    client_mechanism = "ddg"         # optional: "ddg" or "skellam" (default: the config's)

    [[sweep.grid]]
    datasets = ["heart", "thyroid"]
    methods = ["local", "fedavg", "fedprox", "fedmap", "pooled"]
    epsilons = [1, 4, "none"]       # "none": no differential privacy
    client_epsilons = [4, "none"]   # optional (default ["none"]): client-level DP
    secure_aggregation = [true, false]
    seeds = [0, 1, 2]

Collapsed axes (so the grid never runs the same experiment twice):
``pooled`` (the centralised, non-private upper bound) runs only with no DP and
no secure aggregation. ``local`` releases nothing (no aggregate, no score), so
the engine trains it without DP noise at every budget (epsilon spent 0) and
without aggregation: it runs once, with no DP and secure aggregation off, and
the report draws it as a flat reference across epsilon. Both run only without
client-level DP. Client-level DP (distributed noise inside secure aggregation)
needs secure aggregation: a client epsilon combined with
``secure_aggregation = false`` is skipped.

Run ids are stable: the client-level keys (``client_epsilon``, ``client_delta``,
``client_mechanism``) enter the spec, its digest and the id only when set, so
a run without client-level DP keeps the id it had before they existed.
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
CLIENT_MECHANISMS = ("ddg", "skellam")
"""Values of ``config.privacy.ClientDpMechanism`` (kept as strings: this module stays light)."""


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
    client_epsilon: float | None = None
    client_delta: float | None = None
    client_mechanism: str | None = None

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("run spec: dataset must be non-empty")
        for name in ("epsilon", "client_epsilon"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"run spec: {name} must be finite and > 0, got {value!r}")
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"run spec: delta must be in (0, 1), got {self.delta!r}")
        self._check_client_dp()
        if isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"run spec: seed must be an int >= 0, got {self.seed!r}")
        for name in ("rounds", "epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"run spec: {name} must be an int >= 1, got {value!r}")

    def _check_client_dp(self) -> None:
        """Client-level DP needs an aggregating method and secure aggregation."""
        if self.client_epsilon is None:
            if self.client_delta is not None or self.client_mechanism is not None:
                raise ConfigError("run spec: client_delta/client_mechanism need a client_epsilon")
            return
        if self.method in (SweepMethod.LOCAL, SweepMethod.POOLED):
            raise ConfigError(
                f"run spec: client_epsilon needs an aggregating method, not {self.method.value!r}"
            )
        if not self.secure_aggregation:
            raise ConfigError("run spec: client_epsilon needs secure_aggregation = true")
        delta = self.client_delta
        if delta is not None and not (math.isfinite(delta) and 0 < delta < 1):
            raise ConfigError(f"run spec: client_delta must be in (0, 1), got {delta!r}")
        mechanism = self.client_mechanism
        if mechanism is not None and mechanism not in CLIENT_MECHANISMS:
            raise ConfigError(
                f"run spec: client_mechanism must be one of {list(CLIENT_MECHANISMS)}, "
                f"got {mechanism!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON data; the client-level keys appear only when set (id stability)."""
        data: dict[str, Any] = {
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
        if self.client_epsilon is not None:
            data["client_epsilon"] = self.client_epsilon
        if self.client_delta is not None:
            data["client_delta"] = self.client_delta
        if self.client_mechanism is not None:
            data["client_mechanism"] = self.client_mechanism
        return data

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
                client_epsilon=_optional_float(data.get("client_epsilon")),
                client_delta=_optional_float(data.get("client_delta")),
                client_mechanism=data.get("client_mechanism"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"malformed run spec: {exc}") from None

    @property
    def run_id(self) -> str:
        """``<dataset>-<method>-eps<e|inf>[-ceps<c>]-<sa|plain>-s<seed>-<12 hex of sha256(spec)>``.

        The ``-ceps<c>`` part (client-level epsilon) is present only when set.
        """
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        eps = "inf" if self.epsilon is None else f"{self.epsilon:g}"
        agg = "sa" if self.secure_aggregation else "plain"
        ceps = "" if self.client_epsilon is None else f"-ceps{self.client_epsilon:g}"
        slug = re.sub(r"[^A-Za-z0-9]+", "_", self.dataset).strip("_") or "data"
        return f"{slug}-{self.method.value}-eps{eps}{ceps}-{agg}-s{self.seed}-{digest}"


def _optional_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


_GRID_KEYS = {"datasets", "methods", "epsilons", "client_epsilons", "secure_aggregation", "seeds"}
_SWEEP_KEYS = {
    "delta",
    "rounds",
    "epochs",
    "simulation_config",
    "client_delta",
    "client_mechanism",
    "grid",
}


def _list(grid: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = grid.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty list")
    return value


def _epsilon(value: object, where: str) -> float | None:
    if value == NO_DP:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {value!r} is neither a number nor {NO_DP!r}")
    return float(value)


def _optional_int(table: Mapping[str, Any], key: str) -> int | None:
    value = table.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"sweep.{key} must be an integer, got {value!r}")
    return value


def _settings(
    method: SweepMethod,
    epsilons: list[float | None],
    client_epsilons: list[float | None],
    secagg: list[bool],
) -> list[tuple[float | None, float | None, bool]]:
    """(epsilon, client epsilon, secure aggregation) of one method, axes collapsed."""
    if method in (SweepMethod.POOLED, SweepMethod.LOCAL):
        return [(None, None, False)]
    return [
        (eps, ceps, sa)
        for eps in epsilons
        for ceps in client_epsilons
        for sa in secagg
        if ceps is None or sa
    ]


def expand_grid(
    grid: Mapping[str, Any],
    *,
    delta: float,
    shared: Mapping[str, Any],
    where: str,
    client: Mapping[str, Any] | None = None,
) -> list[RunSpec]:
    """The cross product of one grid, with the collapsed axes of the module docstring.

    ``client``: the shared client-level settings (``client_delta``,
    ``client_mechanism``), given only to runs with a client epsilon.
    """
    unknown = sorted(set(grid) - _GRID_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    datasets = [str(d) for d in _list(grid, "datasets", where)]
    try:
        methods = [SweepMethod(m) for m in _list(grid, "methods", where)]
    except ValueError as exc:
        raise ConfigError(f"{where}.methods: {exc}") from None
    epsilons = [_epsilon(e, f"{where}.epsilons") for e in _list(grid, "epsilons", where)]
    listed = _list(grid, "client_epsilons", where) if "client_epsilons" in grid else [NO_DP]
    client_epsilons = [_epsilon(e, f"{where}.client_epsilons") for e in listed]
    secagg = _list(grid, "secure_aggregation", where)
    if not all(isinstance(s, bool) for s in secagg):
        raise ConfigError(f"{where}.secure_aggregation must be a list of true/false")
    seeds = _list(grid, "seeds", where)
    specs = []
    for dataset in datasets:
        for method in methods:
            for eps, ceps, sa in _settings(method, epsilons, client_epsilons, secagg):
                extra = {} if ceps is None else {"client_epsilon": ceps, **(client or {})}
                specs += [
                    RunSpec(
                        dataset=dataset,
                        method=method,
                        epsilon=eps,
                        delta=delta,
                        secure_aggregation=sa,
                        seed=seed,
                        **shared,
                        **extra,
                    )
                    for seed in seeds
                ]
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
    client = _client_settings(sweep, source)
    specs: list[RunSpec] = []
    for i, grid in enumerate(grids):
        where = f"sweep.grid[{i}]"
        specs += expand_grid(grid, delta=float(delta), shared=shared, where=where, client=client)
    return unique(specs)


def _client_settings(sweep: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``client_delta`` / ``client_mechanism`` of ``[sweep]``, only those given."""
    client: dict[str, Any] = {}
    delta = sweep.get("client_delta")
    if delta is not None:
        if isinstance(delta, bool) or not isinstance(delta, int | float):
            raise ConfigError(f"{source}: sweep.client_delta must be a number")
        client["client_delta"] = float(delta)
    mechanism = sweep.get("client_mechanism")
    if mechanism is not None:
        if mechanism not in CLIENT_MECHANISMS:
            raise ConfigError(
                f"{source}: sweep.client_mechanism must be one of {list(CLIENT_MECHANISMS)}, "
                f"got {mechanism!r}"
            )
        client["client_mechanism"] = mechanism
    return client


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
