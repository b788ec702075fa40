"""Tidy per-run rows from a sweep directory, and their seed statistics."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedmap_secure.experiments.sweep.store import StoredRun

METRICS = ("accuracy", "balanced_accuracy", "roc_auc")


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """One finished run, flattened for tables and plots.

    ``client_epsilon`` is the spec's client-level budget (None: no client-level
    DP); the other ``client_*`` fields come from the summary's
    ``privacy.client_level_dp`` block (None when the run had none).
    """

    dataset: str
    method: str
    epsilon: float | None
    secure_aggregation: bool
    seed: int
    site_metrics: dict[str, dict[str, float | None]]
    site_epsilon: dict[str, float | None]
    wall_seconds: float
    bytes_per_round: dict[str, int] | None
    client_epsilon: float | None = None
    client_epsilon_spent: float | None = None
    client_delta: float | None = None
    client_mechanism: str | None = None

    def site_values(self, metric: str) -> list[float]:
        values = [m.get(metric) for m in self.site_metrics.values()]
        return [v for v in values if v is not None and math.isfinite(v)]

    def mean(self, metric: str) -> float | None:
        values = self.site_values(metric)
        return float(np.mean(values)) if values else None

    def worst(self, metric: str) -> float | None:
        values = self.site_values(metric)
        return min(values) if values else None


def _row(run: StoredRun) -> RunRow | None:
    summary = run.summary
    if summary is None:
        return None
    spec = run.spec
    comm: dict[str, Any] = summary.get("communication") or {}
    client_dp: dict[str, Any] = (summary.get("privacy") or {}).get("client_level_dp") or {}
    spent = client_dp.get("epsilon_spent")
    return RunRow(
        dataset=spec.dataset,
        method=spec.method.value,
        epsilon=spec.epsilon,
        secure_aggregation=spec.secure_aggregation,
        seed=spec.seed,
        site_metrics={
            s["site"]: dict(s["personalised"]) for s in summary["sites"] if s["personalised"]
        },
        site_epsilon={s["site"]: s.get("epsilon_spent") for s in summary["sites"]},
        wall_seconds=float(summary["wall_seconds"]),
        bytes_per_round=comm.get("bytes_per_round"),
        client_epsilon=spec.client_epsilon,
        client_epsilon_spent=None if spent is None else float(spent),
        client_delta=None if client_dp.get("delta") is None else float(client_dp["delta"]),
        client_mechanism=(client_dp.get("plan") or {}).get("mechanism"),
    )


def rows_of(runs: Iterable[StoredRun]) -> list[RunRow]:
    return [row for row in map(_row, runs) if row is not None]


def without_client_dp(rows: Iterable[RunRow]) -> list[RunRow]:
    """The rows of the record-level report: runs without client-level DP."""
    return [r for r in rows if r.client_epsilon is None]


def client_epsilons_of(rows: Sequence[RunRow]) -> list[float]:
    """Sorted client-level epsilons present in ``rows``."""
    return sorted({r.client_epsilon for r in rows if r.client_epsilon is not None})


@dataclass(frozen=True, kw_only=True)
class Stat:
    mean: float
    sd: float
    n: int

    def text(self, digits: int = 3) -> str:
        sd = f" ± {self.sd:.{digits}f}" if self.n > 1 else ""
        return f"{self.mean:.{digits}f}{sd} (n={self.n})"


def stat(values: Sequence[float | None]) -> Stat | None:
    clean = [v for v in values if v is not None]
    if not clean:
        return None
    sd = float(np.std(clean, ddof=1)) if len(clean) > 1 else 0.0
    return Stat(mean=float(np.mean(clean)), sd=sd, n=len(clean))


def utility_rows(rows: Sequence[RunRow]) -> list[RunRow]:
    """Rows for utility tables: per (dataset, method, epsilon), the secure-aggregation runs
    when there are any, else the plain ones (so no seed is counted twice)."""
    groups: dict[tuple[str, str, float | None], list[RunRow]] = defaultdict(list)
    for r in rows:
        groups[(r.dataset, r.method, r.epsilon)].append(r)
    chosen: list[RunRow] = []
    for group in groups.values():
        secure = [r for r in group if r.secure_aggregation]
        chosen += secure or group
    return chosen


def group_stat(
    rows: Sequence[RunRow], value: Callable[[RunRow], float | None], **where: object
) -> Stat | None:
    selected = [r for r in rows if all(getattr(r, k) == v for k, v in where.items())]
    return stat([value(r) for r in selected])


def epsilons_of(rows: Sequence[RunRow]) -> list[float | None]:
    """Sorted finite epsilons, then None (no DP) last."""
    finite = sorted({r.epsilon for r in rows if r.epsilon is not None})
    tail: list[float | None] = [None] if any(r.epsilon is None for r in rows) else []
    return [*finite, *tail]


METHOD_ORDER = ("local", "fedavg", "fedprox", "fedmap", "pooled")


def methods_of(rows: Sequence[RunRow]) -> list[str]:
    present = {r.method for r in rows}
    return [m for m in METHOD_ORDER if m in present]


FLAT = ("local", "pooled")
"""Methods run once without DP: local releases nothing, pooled is the non-private reference."""


def at_epsilon(rows: Sequence[RunRow], epsilon: float | None) -> list[RunRow]:
    """Rows of the given privacy level, plus the flat references (run once, no DP)."""
    return [r for r in rows if r.epsilon == epsilon or r.method in FLAT]


def eps_label(epsilon: float | None) -> str:
    return "∞ (no DP)" if epsilon is None else f"{epsilon:g}"
