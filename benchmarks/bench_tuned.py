"""Test-set utility of every method with ITS OWN tuned hyperparameters (docs/TUNING.md).

Reads the configurations ``benchmarks/tune.py`` chose on validation rows
(``--tuning benchmarks/results/tuning/heart.json``), then runs each method on the
real train/test split over several seeds and prints balanced accuracy and AUC (mean
and worst site), accuracy second. The test rows are read here only, after tuning.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_tuned.py --dataset heart --seeds 5 \
        --tuning benchmarks/results/tuning/heart.json [--methods fedmap fedavg]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import METHODS, configure, run

from fedmap_secure.config import load_config
from fedmap_secure.data import load_dataset
from fedmap_secure.experiments.report import headline


def _cell(values: list[float | None]) -> str:
    clean = np.array([v for v in values if v is not None], dtype=float)
    if clean.size == 0:
        return "-"
    return f"{clean.mean():.3f} ± {clean.std(ddof=1) if clean.size > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", default="heart")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tuning", required=True, help="JSON written by benchmarks/tune.py")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", help="write the per-seed headline figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen: dict[str, Any] = json.loads(Path(args.tuning).read_text("utf-8"))["chosen"]
    base = dataclasses.replace(load_config(), rounds=args.rounds)
    dataset = load_dataset(args.dataset)
    console = Console(width=180)
    table = Table(title=f"{args.dataset}: tuned methods, {args.seeds} seeds, {args.rounds} rounds")
    keys = ("balanced_accuracy", "roc_auc", "accuracy")
    for col in ("method", "knobs", "mean BA", "worst BA", "mean AUC", "worst AUC", "mean acc"):
        table.add_column(col)
    out: dict[str, Any] = {}
    for method in args.methods:
        if method not in chosen:
            console.print(f"[yellow]{method}: not in {args.tuning}; skipped")
            continue
        knobs = chosen[method]["knobs"]
        per_seed = []
        per_site: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            cfg = dataclasses.replace(configure(base, method, knobs), seed=seed)
            result = run(cfg, dataset, method == "pooled")
            per_seed.append(headline(result))
            for s in result.sites:
                if s.personalised is not None:
                    per_site.setdefault(s.site, []).append(s.personalised.balanced_accuracy)
        site_ba = {name: float(np.mean(v)) for name, v in per_site.items()}
        out[method] = {"knobs": knobs, "per_seed": per_seed, "site_mean_ba": site_ba}
        sites_text = ", ".join(f"{k} {v:.3f}" for k, v in site_ba.items())
        console.print(f"  {method}: per-site personalised BA (mean over seeds): {sites_text}")
        row = [method, json.dumps(knobs)]
        for k in keys[:2]:  # mean BA, worst BA, mean AUC, worst AUC
            for stat in ("mean", "worst_site"):
                row.append(_cell([h[f"{stat}_personalised_{k}"] for h in per_seed]))
        row.append(_cell([h["mean_personalised_accuracy"] for h in per_seed]))
        table.add_row(*row)
        console.print(f"  {method}: done", highlight=False)
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
