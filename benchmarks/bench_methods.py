"""Utility of the four methods (plus references) on heart and thyroid over several seeds.

Prints, per dataset and method, the mean over seeds of (a) the mean over sites
of personalised test accuracy and (b) the worst site's personalised accuracy,
beside FLamby's published Fed-Heart-Disease figures. Also prints the parameter
counts of theta and psi for both prior forms.

    PYTHONPATH=. python benchmarks/bench_methods.py [--datasets heart thyroid] [--seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config import Method, PriorForm, SimulationConfig, load_config
from fedmap_secure.data.types import FederatedDataset, SiteData
from fedmap_secure.experiments.pooled import run_pooled
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.runtime.results import SimulationResult
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer

# FLamby (du Terrail et al., NeurIPS 2022), Fed-Heart-Disease, mean over the 4 sites
# of per-site accuracy: local = mean of the per-site local models.
FLAMBY_HEART = {"local": 0.730, "fedavg": 0.685, "fedyogi": 0.731, "pooled": 0.735}

ROWS: tuple[tuple[str, Method | None, PriorForm | None], ...] = (
    ("local", Method.LOCAL, None),
    ("fedavg", Method.FEDAVG, None),
    ("fedprox", Method.FEDPROX, None),
    ("fedmap", Method.FEDMAP, PriorForm.PER_TENSOR),
    ("fedmap (coordinatewise)", Method.FEDMAP, PriorForm.COORDINATEWISE),
    ("pooled (reference)", None, None),
)


def load(spec: str) -> FederatedDataset:
    loader: Callable[..., Any] = importlib.import_module("fedmap_secure.data").load_dataset
    dataset: FederatedDataset = loader(spec)
    return dataset


def trainer(site: SiteData, cfg: LocalTrainingConfig) -> LocalTrainer:
    return AdamMapTrainer(cfg)


def run_one(
    base: SimulationConfig,
    ds: FederatedDataset,
    method: Method | None,
    form: PriorForm | None,
    seed: int,
) -> SimulationResult:
    cfg = dataclasses.replace(base, seed=seed, evaluate_every=0)
    if method is None:
        return run_pooled(cfg, ds, trainer)
    cfg = dataclasses.replace(cfg, method=method)
    if form is not None:
        cfg = dataclasses.replace(cfg, prior=dataclasses.replace(cfg.prior, form=form))
    return run_simulation(cfg, ds, PlainSum(), trainer)


def bench_dataset(
    console: Console, base: SimulationConfig, spec: str, seeds: int, only: list[str] | None
) -> None:
    ds = load(spec)
    table = Table(title=f"{spec}: {base.rounds} rounds, {seeds} seeds (mean ± sd over seeds)")
    for col in (
        "method",
        "mean pers. acc",
        "worst-site pers. acc",
        "mean global acc",
        "theta",
        "psi",
        "s/run",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    if spec == "heart":
        table.add_column("FLamby mean acc", justify="right")
    for label, method, form in ROWS:
        if only is not None and label not in only:
            continue
        results, start = [], time.perf_counter()
        for seed in range(seeds):
            results.append(run_one(base, ds, method, form, seed))
        per_run = (time.perf_counter() - start) / seeds
        mean = np.array([r.mean_personalised_accuracy for r in results], dtype=float)
        worst = np.array([r.worst_site_personalised_accuracy for r in results], dtype=float)
        glob = [r.mean_global_accuracy for r in results]
        cells = [
            label,
            f"{mean.mean():.3f} ± {mean.std():.3f}",
            f"{worst.mean():.3f} ± {worst.std():.3f}",
            "-" if glob[0] is None else f"{np.mean(np.array(glob, dtype=float)):.3f}",
            str(results[0].n_theta),
            str(results[0].n_psi),
            f"{per_run:.1f}",
        ]
        if spec == "heart":
            key = label.split(" ")[0]
            cells.append(f"{FLAMBY_HEART[key]:.3f}" if key in FLAMBY_HEART else "")
        table.add_row(*cells)
        sites = np.mean(
            [[s.personalised.accuracy for s in r.sites if s.personalised] for r in results], axis=0
        )
        console.print(
            f"  {spec} {label}: per-site mean personalised accuracy {np.round(sites, 3).tolist()}"
        )
    console.print(table)
    if spec == "heart":
        console.print(f"FLamby Fed-Heart-Disease (for comparison): {FLAMBY_HEART}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--datasets", nargs="+", default=["heart", "thyroid"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, help="override the default config's rounds")
    parser.add_argument(
        "--only", nargs="+", help="row labels to run, e.g. fedavg 'pooled (reference)'"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = load_config()
    if args.rounds is not None:
        base = dataclasses.replace(base, rounds=args.rounds)
    console = Console(width=160)
    for spec in args.datasets:
        bench_dataset(console, base, spec, args.seeds, args.only)


if __name__ == "__main__":
    main()
