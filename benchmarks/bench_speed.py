"""Wall time per round per site of the in-process engine.

Runs FedMAP (default config, per-tensor ICNN prior) on heart, thyroid and a
synthetic federation of 20 sites x about 2,000 rows, and prints the time of
one federated round divided by the number of training sites, the local
optimiser steps per site and round, and the wall time per step (all
included). FedAvg is run too, to show the cost of the prior. The engine
against the engine at issue 18's filing on the reference example's shape
(20 sites x 2,000 rows) is ``bench_sim_sites.py --pin reference``
(results in ``results/sim_reference_20.md``).

    PYTHONPATH=. python benchmarks/bench_speed.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config import Method, PriorForm, load_config
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer


def load(spec: str) -> FederatedDataset:
    data = importlib.import_module("fedmap_secure.data")
    loader: Callable[..., Any] = data.load_dataset
    if spec != "synthetic-20x2000":
        dataset: FederatedDataset = loader(spec)
        return dataset
    synthetic = importlib.import_module("fedmap_secure.data.synthetic")
    config = synthetic.SyntheticConfig(n_sites=20, mean_rows=2000, quantity_skew=0.0)
    dataset = loader("synthetic", seed=0, synthetic=config)
    return dataset


def trainer(site: SiteData, cfg: LocalTrainingConfig) -> LocalTrainer:
    return AdamMapTrainer(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["heart", "thyroid", "synthetic-20x2000"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = dataclasses.replace(
        load_config(), method=Method.FEDMAP, rounds=args.rounds, evaluate_every=0
    )
    table = Table(title=f"{args.rounds} rounds, plain sum, 1 torch thread, evaluation off")
    cols = (
        "dataset",
        "method",
        "sites",
        "rows/site",
        "s/round",
        "s/round/site",
        "steps/site-round",
        "ms/step",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("dataset", "method") else "right")
    variants = (
        ("fedavg", Method.FEDAVG, PriorForm.PER_TENSOR),
        ("fedmap", Method.FEDMAP, PriorForm.PER_TENSOR),
        ("fedmap (coordinatewise)", Method.FEDMAP, PriorForm.COORDINATEWISE),
    )
    # Warm-up (lazy imports, allocator, first-call dispatch): one discarded round.
    run_simulation(dataclasses.replace(base, rounds=1), load("heart"), PlainSum(), trainer)
    for spec in args.datasets:
        ds = load(spec)
        train = ds.by_tier(Tier.TRAIN)
        rows = sum(s.n_train + s.n_test for s in train) / len(train)
        for label, method, form in variants:
            cfg = dataclasses.replace(
                base, method=method, prior=dataclasses.replace(base.prior, form=form)
            )
            result = run_simulation(cfg, ds, PlainSum(), trainer)
            per_round = result.wall_seconds / args.rounds
            steps = sum(r.training.steps for r in result.reports if r.training is not None)
            table.add_row(
                spec,
                label,
                str(len(train)),
                f"{rows:.0f}",
                f"{per_round:.3f}",
                f"{per_round / len(train):.4f}",
                f"{steps / (args.rounds * len(train)):.0f}",
                f"{1e3 * result.wall_seconds / max(steps, 1):.2f}",
            )
    console = Console(width=160)
    console.print(table)


if __name__ == "__main__":
    main()
