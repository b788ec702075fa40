"""Privacy-utility table on Fed-Heart-Disease: per-site epsilon vs personalised accuracy.

Every cell runs the real private pipeline (``run_private_simulation``: per-site
noise calibration, durable ledgers, DP-SGD with the prior gradient after the
noise, Gaussian omega release) with the default configuration, for each seed,
and reports the mean over seeds of (a) the mean over sites of personalised
test accuracy and (b) the worst site's; "no DP" is ``--no-dp``. ``local``
releases nothing, so it needs no DP and is the same at every epsilon.
Aggregation is a plain sum here: secure aggregation changes the sums by at
most its quantisation error (~1e-13, see tests), not the utility.
Side by side: FLamby's DP-FedAvg on Fed-Heart-Disease (du Terrail et al. 2022).

    PYTHONPATH=. python benchmarks/bench_privacy_utility.py [--seeds 5] [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config import Method, SimulationConfig, load_config
from fedmap_secure.data import load_dataset
from fedmap_secure.experiments.pipeline import run_private_simulation

EPSILONS: tuple[float | None, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, None)
METHODS = (Method.LOCAL, Method.FEDAVG, Method.FEDMAP)
FLAMBY_DP_FEDAVG = "~0.70 for epsilon 1 to 50; 0.712 without DP"

Cell = tuple[str, float | None, int]  # (method, epsilon, seed)


def _config(
    base: SimulationConfig, method: str, epsilon: float | None, seed: int
) -> SimulationConfig:
    privacy = (
        dataclasses.replace(base.privacy, enabled=False)
        if epsilon is None
        else dataclasses.replace(base.privacy, epsilon=epsilon)
    )
    return dataclasses.replace(
        base, method=Method(method), seed=seed, evaluate_every=0, privacy=privacy
    )


def run_cell(cell: Cell, rounds: int | None) -> tuple[Cell, float, float, float, float]:
    """(cell, mean personalised acc, worst-site acc, max epsilon spent, seconds)."""
    import torch

    torch.set_num_threads(1)
    method, epsilon, seed = cell
    base = load_config()
    if rounds is not None:
        base = dataclasses.replace(base, rounds=rounds)
    config = _config(base, method, epsilon, seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_private_simulation(
            config, load_dataset("heart"), Path(tmp) / "run", aggregator=PlainSum()
        )
    spent = max(run.epsilon_spent.values(), default=0.0) if run.epsilon_spent else 0.0
    mean = run.result.mean_personalised_accuracy
    worst = run.result.worst_site_personalised_accuracy
    assert mean is not None
    assert worst is not None
    return cell, mean, worst, spent, time.perf_counter() - start


def cells(seeds: int, epsilons: tuple[float | None, ...]) -> list[Cell]:
    out: list[Cell] = []
    for seed in range(seeds):
        out.append((Method.LOCAL.value, None, seed))  # releases nothing: no DP needed
        for method in (Method.FEDAVG, Method.FEDMAP):
            out += [(method.value, eps, seed) for eps in epsilons]
    return out


def table(results: list[tuple[Cell, float, float, float, float]], seeds: int, rounds: int) -> Table:
    t = Table(
        title=f"heart: personalised accuracy vs per-site epsilon ({rounds} rounds, {seeds} seeds)"
    )
    for col in ("method", "epsilon", "mean pers. acc", "worst-site acc", "max eps spent", "s/run"):
        t.add_column(col, justify="left" if col == "method" else "right")
    groups: dict[tuple[str, float | None], list[tuple[float, float, float, float]]] = {}
    for (method, eps, _), mean, worst, spent, secs in results:
        groups.setdefault((method, eps), []).append((mean, worst, spent, secs))
    order = {m.value: i for i, m in enumerate(METHODS)}
    for (method, eps), rows in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] is None, kv[0][1] or 0.0)
    ):
        arr = np.array(rows)
        label = "no DP" if eps is None else f"{eps:g}"
        if method == Method.LOCAL.value:
            label = "any (releases nothing)"
        t.add_row(
            method,
            label,
            f"{arr[:, 0].mean():.3f} ± {arr[:, 0].std():.3f}",
            f"{arr[:, 1].mean():.3f} ± {arr[:, 1].std():.3f}",
            "-" if eps is None else f"{arr[:, 2].max():.3f}",
            f"{arr[:, 3].mean():.1f}",
        )
    t.caption = f"FLamby DP-FedAvg on Fed-Heart-Disease (mean acc): {FLAMBY_DP_FEDAVG}"
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="processes (one core each)")
    parser.add_argument("--rounds", type=int, help="override the default config's rounds")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, epsilon 1 and no DP, 5 rounds"
    )
    args = parser.parse_args()
    seeds, epsilons, rounds = args.seeds, EPSILONS, args.rounds
    if args.quick:
        seeds, epsilons, rounds = 1, (1.0, None), 5
    todo = cells(seeds, epsilons)
    start = time.perf_counter()
    console = Console(width=120)
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for result in pool.map(run_cell, todo, [rounds] * len(todo)):
            (method, eps, seed), mean, worst, spent, secs = result
            console.print(
                f"{method} eps={eps} seed={seed}: mean {mean:.3f} worst {worst:.3f} "
                f"spent {spent:.3f} ({secs:.0f} s)"
            )
            results.append(result)
    console.print(table(results, seeds, rounds or load_config().rounds))
    console.print(f"{len(todo)} runs in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
