"""Choose FedMAP's ``[personalisation]`` on VALIDATION rows only (docs/TUNING.md protocol).

Every configuration of the grid (epochs x prior precision x the solve's learning rate
(0: inherit ``[training]``) x early stopping on/off, plus "off" = no solve, the
personalised model is the last round's theta_k) runs FedMAP on the validation view of
the dataset (``experiments.validation``: each training site's training rows split
80/20, stratified, fixed seed; test rows never read), non-private, plain sum, with
today's defaults otherwise. Score, as the protocol's: mean over seeds of
(mean site validation BA + worst-site validation BA) / 2, ties by mean validation AUC;
a site whose validation part holds one class is left out of the score (its balanced
accuracy would reward predicting that class everywhere), as ``[model] candidates`` does.
Prints every trial with its per-site validation BA; ``--json`` keeps them.

    PYTHONPATH=. .venv/bin/python benchmarks/tune_personalisation.py --dataset thyroid \\
        --seeds 3 --json benchmarks/results/tuning/personalisation_thyroid.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config import Method, PersonalisationConfig, load_config
from fedmap_secure.data import load_dataset
from fedmap_secure.experiments.validation import validation_dataset
from fedmap_secure.runtime.inprocess import run_simulation

EPOCHS = (20, 50)
PRECISIONS = (3.0, 10.0, 30.0, 100.0)
LEARNING_RATES = (0.0, 1e-2, 3e-2)
"""The solve's Adam step size; 0 stands for "inherit [training] learning_rate" (3e-3)."""
EARLY_STOPPING = ("on", "off")

Trial = tuple[int, float, float, bool]
"""(epochs, prior precision, learning rate (0: inherit), early stopping)."""


def _personalisation(trial: Trial) -> PersonalisationConfig:
    epochs, precision, lr, early = trial
    return PersonalisationConfig(
        epochs=epochs,
        prior_precision=precision,
        learning_rate=lr or None,
        early_stopping=early,
    )


def _label(trial: Trial) -> str:
    epochs, precision, lr, early = trial
    if epochs == 0:
        return "off (no solve)"
    rate = "inherit" if lr == 0 else f"{lr:g}"
    return f"ep {epochs} lambda {precision:g} lr {rate} es {'on' if early else 'off'}"


def _one(args: tuple[str, int, Trial, int]) -> dict[str, Any]:
    dataset_name, seed, trial, rounds = args
    epochs, precision, lr, early = trial
    torch.set_num_threads(1)
    base = load_config()
    config = dataclasses.replace(
        base,
        method=Method.FEDMAP,
        seed=seed,
        rounds=rounds,
        evaluate_every=0,
        personalisation=_personalisation(trial),
    )
    dataset = validation_dataset(load_dataset(dataset_name))
    start = time.perf_counter()
    result = run_simulation(config, dataset, PlainSum())
    # A site whose validation part holds one class has no balanced accuracy to compare
    # configurations by (it would reward predicting that class everywhere): left out of
    # the score, as model selection does (heart's Switzerland: all 6 rows positive).
    two_class = {s.name for s in dataset.sites if np.unique(s.y_test).size >= 2}
    sites = {
        s.site: (s.personalised.balanced_accuracy, s.personalised.roc_auc)
        for s in result.sites
        if s.personalised is not None and s.site in two_class
    }
    return {
        "epochs": epochs,
        "prior_precision": precision,
        "learning_rate": lr,
        "early_stopping": early,
        "seed": seed,
        "sites": {k: v[0] for k, v in sites.items()},
        "auc": {k: v[1] for k, v in sites.items()},
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", default="heart")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, nargs="+", default=list(EPOCHS))
    parser.add_argument("--precisions", type=float, nargs="+", default=list(PRECISIONS))
    parser.add_argument(
        "--learning-rates",
        type=float,
        nargs="+",
        default=list(LEARNING_RATES),
        help="the solve's Adam lr; 0: inherit [training] learning_rate",
    )
    parser.add_argument(
        "--early-stopping", nargs="+", choices=EARLY_STOPPING, default=list(EARLY_STOPPING)
    )
    parser.add_argument("--json", help="write every trial here")
    args = parser.parse_args()
    grid: list[Trial] = [
        (0, 0.0, 0.0, True),
        *(
            (e, p, lr, es == "on")
            for e, p, lr, es in itertools.product(
                args.epochs, args.precisions, args.learning_rates, args.early_stopping
            )
        ),
    ]
    jobs = [(args.dataset, s, t, args.rounds) for t in grid for s in range(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(_one, jobs))
    print(
        f"{args.dataset}: VALIDATION view, seeds 0-{args.seeds - 1}, {args.rounds} rounds, "
        f"{len(jobs)} runs in {time.perf_counter() - start:.0f} s"
    )
    trials = []
    for t in grid:
        e, p, lr, early = t
        rows = [
            r
            for r in runs
            if (r["epochs"], r["prior_precision"], r["learning_rate"], r["early_stopping"]) == t
        ]
        means = [float(np.mean(list(r["sites"].values()))) for r in rows]
        worsts = [min(r["sites"].values()) for r in rows]
        aucs = [float(np.nanmean([a for a in r["auc"].values() if a is not None])) for r in rows]
        names = list(rows[0]["sites"])
        per_site = {n: float(np.mean([r["sites"][n] for r in rows])) for n in names}
        trial = {
            "epochs": e,
            "prior_precision": p,
            "learning_rate": lr,
            "early_stopping": early,
            "mean_ba": float(np.mean(means)),
            "worst_ba": float(np.mean(worsts)),
            "mean_auc": float(np.mean(aucs)),
            "score": float((np.mean(means) + np.mean(worsts)) / 2),
            "per_site_ba": per_site,
            "per_seed_mean_ba": means,
        }
        trials.append(trial)
        label = _label(t)
        sites = " ".join(f"{n} {v:.3f}" for n, v in per_site.items())
        print(
            f"{label:38s} score {trial['score']:.3f} mean {trial['mean_ba']:.3f} "
            f"worst {trial['worst_ba']:.3f} AUC {trial['mean_auc']:.3f} | {sites}"
        )
    index = max(range(len(trials)), key=lambda i: (trials[i]["score"], trials[i]["mean_auc"]))
    best = trials[index]
    print(f"chosen: {_label(grid[index])}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "trials": trials, "chosen": best}, fh, indent=2)


if __name__ == "__main__":
    main()
