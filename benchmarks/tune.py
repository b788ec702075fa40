"""The tuning protocol of docs/TUNING.md: every method's hyperparameters chosen by the
same procedure and the same budget, on validation rows only (never on test rows).

Protocol (non-private training; plain sum, no secure aggregation: neither changes the
update, see docs/ALGORITHM.md):

1. Validation split. Every training-tier site's TRAINING rows are split once,
   stratified by class, into an inner training part (80%) and a validation part
   (20%), with a fixed split seed. The site's test rows are dropped: the tuning runs
   never see them. The validation part plays the test set's role in the tuning runs.
2. Stage 1 (shared grid, the same for every method): learning rate x local epochs x
   early stopping x class weighting (``SHARED_GRID``).
3. Stage 2 (three more configurations per method, at the best stage-1 setting):
   the method's own knob (FedProx mu, FedMAP lr_psi) or, for methods without one
   (local, fedavg, pooled), the batch size. Every method gets 24 + 3 = 27 configurations.
4. Selection score, per configuration: the mean over tuning seeds of
   (mean site validation balanced accuracy + worst-site validation balanced accuracy) / 2;
   ties broken by mean validation AUC. The best configuration wins.

Then the chosen values are written down in docs/TUNING.md and the test-set figures come
from ordinary runs with them (``bench_methods.py``), never from these runs.

    PYTHONPATH=. .venv/bin/python benchmarks/tune.py --dataset heart --seeds 3 --rounds 20 \
        [--methods fedmap fedavg] [--json benchmarks/results/tuning/heart.json] \
        [--grid small --no-stage2]   # a reduced budget, the same for every method
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from rich.console import Console

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config import Method, SimulationConfig, load_config
from fedmap_secure.data import load_dataset
from fedmap_secure.data.types import FederatedDataset, SiteData
from fedmap_secure.experiments.pooled import run_pooled
from fedmap_secure.experiments.validation import validation_dataset
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.runtime.results import SimulationResult
from fedmap_secure.training.interface import ClassWeighting, LocalTrainer, LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer

SHARED_GRID: dict[str, Sequence[Any]] = {
    "learning_rate": (3e-3, 1e-2, 5e-2),
    "epochs": (2, 10),
    "early_stopping": (False, True),  # True: patience 2 on a 20% split of the inner rows
    "class_weighting": ("none", "balanced"),
}
SMALL_GRID: dict[str, Sequence[Any]] = {  # --grid small: a reduced, equal budget per method
    "learning_rate": (3e-3, 1e-2, 5e-2),
    "epochs": (2, 10),
    "early_stopping": (True,),
    "class_weighting": ("balanced",),
}
STAGE2: dict[str, tuple[str, Sequence[Any]]] = {
    "fedprox": ("fedprox.mu", (0.01, 0.1, 1.0)),
    "fedmap": ("server.lr_psi", (5e-4, 2e-3, 1e-2)),
    "local": ("training.batch_size", (16, 32, 64)),
    "fedavg": ("training.batch_size", (16, 32, 64)),
    "pooled": ("training.batch_size", (16, 32, 64)),
}
METHODS = ("fedmap", "fedavg", "fedprox", "local", "pooled")


def _trainer(site: SiteData, cfg: LocalTrainingConfig) -> LocalTrainer:
    return AdamMapTrainer(cfg)


def configure(base: SimulationConfig, method: str, knobs: dict[str, Any]) -> SimulationConfig:
    """``base`` with one configuration of the grid applied."""
    training = base.training
    server, fedprox = base.server, base.fedprox
    t: dict[str, Any] = {}
    for key, value in knobs.items():
        if key == "early_stopping":
            t["validation_fraction"] = 0.2 if value else 0.0
            t["patience"] = 2
        elif key == "class_weighting":
            t["class_weighting"] = ClassWeighting(value)
        elif key in ("learning_rate", "epochs") or key == "training.batch_size":
            t[key.removeprefix("training.")] = value
        elif key == "server.lr_psi":
            server = dataclasses.replace(server, lr_psi=value)
        elif key == "fedprox.mu":
            fedprox = dataclasses.replace(fedprox, mu=value)
        else:
            raise KeyError(key)
    training = dataclasses.replace(training, **t)
    m = Method.FEDMAP if method == "pooled" else Method(method)
    return dataclasses.replace(
        base, method=m, training=training, server=server, fedprox=fedprox, evaluate_every=0
    )


def run(config: SimulationConfig, dataset: FederatedDataset, pooled: bool) -> SimulationResult:
    if pooled:
        return run_pooled(config, dataset, _trainer)
    return run_simulation(config, dataset, PlainSum(), _trainer)


def _values(result: SimulationResult, metric: str) -> list[float]:
    out = []
    for s in result.sites:
        m = s.personalised or s.global_
        v = None if m is None else m.as_dict().get(metric)
        if v is not None:
            out.append(float(v))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    method: str
    knobs: dict[str, Any]
    mean_ba: float
    worst_ba: float
    mean_auc: float
    seconds: float

    @property
    def score(self) -> tuple[float, float]:
        return ((self.mean_ba + self.worst_ba) / 2, self.mean_auc)


def trial(
    base: SimulationConfig,
    dataset: FederatedDataset,
    method: str,
    knobs: dict[str, Any],
    seeds: Sequence[int],
) -> Trial:
    start = time.perf_counter()
    mean_ba, worst_ba, auc = [], [], []
    for seed in seeds:
        cfg = dataclasses.replace(configure(base, method, knobs), seed=seed)
        result = run(cfg, dataset, method == "pooled")
        ba = _values(result, "balanced_accuracy")
        mean_ba.append(float(np.mean(ba)))
        worst_ba.append(min(ba))
        aucs = _values(result, "roc_auc")
        auc.append(float(np.mean(aucs)) if aucs else float("nan"))
    return Trial(
        method=method,
        knobs=knobs,
        mean_ba=float(np.mean(mean_ba)),
        worst_ba=float(np.mean(worst_ba)),
        mean_auc=float(np.nanmean(auc)),
        seconds=time.perf_counter() - start,
    )


def shared_grid(grid: dict[str, Sequence[Any]] = SHARED_GRID) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def tune_method(
    base: SimulationConfig,
    dataset: FederatedDataset,
    method: str,
    seeds: Sequence[int],
    log: Callable[[Trial], None],
    grid: dict[str, Sequence[Any]] = SHARED_GRID,
    stage2: bool = True,
) -> tuple[Trial, list[Trial]]:
    trials = []
    for knobs in shared_grid(grid):
        trials.append(trial(base, dataset, method, knobs, seeds))
        log(trials[-1])
    best = max(trials, key=lambda t: t.score)
    if not stage2:
        return best, trials
    key, values = STAGE2[method]
    for value in values:
        trials.append(trial(base, dataset, method, {**best.knobs, key: value}, seeds))
        log(trials[-1])
    return max(trials, key=lambda t: t.score), trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", default="heart")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", help="write every trial to this JSON file")
    parser.add_argument(
        "--grid",
        choices=("shared", "small"),
        default="shared",
        help="small: 6 configurations (lr x epochs; early stopping on, balanced weighting)",
    )
    parser.add_argument("--no-stage2", action="store_true", help="skip stage 2 (every method)")
    args = parser.parse_args()
    grid = SMALL_GRID if args.grid == "small" else SHARED_GRID
    torch.set_num_threads(1)
    base = dataclasses.replace(load_config(), rounds=args.rounds)
    dataset = validation_dataset(load_dataset(args.dataset))
    console = Console(width=160)
    seeds = list(range(args.seeds))
    console.print(
        f"{args.dataset}: validation view, sites "
        + ", ".join(f"{s.name} {s.n_train}/{s.n_test}" for s in dataset.sites)
        + f"; seeds {seeds}, {args.rounds} rounds"
    )

    def log(t: Trial) -> None:
        console.print(
            f"  {t.method:8s} {t.knobs}  val BA {t.mean_ba:.3f} worst {t.worst_ba:.3f} "
            f"AUC {t.mean_auc:.3f}  ({t.seconds:.0f} s)",
            highlight=False,
        )

    chosen: dict[str, Any] = {}
    every: list[dict[str, Any]] = []
    for method in args.methods:
        best, trials = tune_method(
            base, dataset, method, seeds, log, grid=grid, stage2=not args.no_stage2
        )
        chosen[method] = {**dataclasses.asdict(best), "score": best.score[0]}
        every += [dataclasses.asdict(t) for t in trials]
        console.print(f"[bold]{method}[/bold]: chosen {best.knobs} (score {best.score[0]:.3f})")
        if args.json:  # after every method, so a long run keeps what it finished
            with open(args.json, "w", encoding="utf-8") as fh:
                json.dump({"chosen": chosen, "trials": every, "args": vars(args)}, fh, indent=2)
    console.print_json(json.dumps(chosen))


if __name__ == "__main__":
    main()
