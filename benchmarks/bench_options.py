"""Side-by-side utility of configuration variants over seeds (issue 16 options).

Each variant is a config file (or ``default``); every (variant, seed) is one ordinary
``fedmap-secure simulate`` run on the real train/test split, with the same extra
flags. Prints mean +- sd over seeds of the per-site mean and of the worst site
(balanced accuracy, AUC; personalised models), and the per-seed mean BA for pairing.
Hyperparameters must come from validation (docs/TUNING.md), never from these figures.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_options.py --dataset heart --seeds 5 \\
        --variant default --variant threshold=benchmarks/configs/threshold.toml \\
        -- --no-dp --no-secagg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

KEYS = (
    "mean_personalised_balanced_accuracy",
    "worst_site_personalised_balanced_accuracy",
    "mean_personalised_roc_auc",
    "mean_global_balanced_accuracy",
)


VALIDATION_RUNNER = Path(__file__).resolve().parent / "simulate_validation.py"


def _run(args: tuple[str, str | None, int, str, list[str], Path, bool]) -> dict[str, Any]:
    label, config, seed, dataset, extra, root, validation = args
    out = root / f"{label}-{seed}"
    command = (
        [sys.executable, str(VALIDATION_RUNNER)]
        if validation
        else [str(Path(sys.executable).parent / "fedmap-secure")]
    )
    cmd = [
        *command,
        "simulate",
        "--dataset",
        dataset,
        "--seed",
        str(seed),
        "--out",
        str(out),
        *(["--config", config] if config else []),
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{label} seed {seed} failed: {done.stderr.strip()[-400:]}")
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text("utf-8"))
    summary["_label"] = label
    return summary


def _cell(values: list[float | None]) -> str:
    if any(v is None for v in values):
        return "-"
    a = np.array(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", default="heart")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--variant", action="append", required=True, help="LABEL=CONFIG | default")
    parser.add_argument("--json", help="write every run's headline figures here")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="run on the validation view (benchmarks/simulate_validation.py): for choosing",
    )
    parser.add_argument(
        "--per-site", action="store_true", help="also print each site's mean BA over seeds"
    )
    parser.add_argument("extra", nargs="*", help="flags passed to every simulate run (after --)")
    args = parser.parse_args()
    variants = [(v, None) if "=" not in v else tuple(v.split("=", 1)) for v in args.variant]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    with tempfile.TemporaryDirectory(prefix="bench-options-") as tmp:
        root = Path(tmp)
        jobs = [
            (lab, cfg, s, args.dataset, args.extra, root, args.validation)
            for lab, cfg in variants
            for s in seeds
        ]
        with ThreadPoolExecutor(args.workers) as pool:
            runs = list(pool.map(_run, jobs))
    out: dict[str, Any] = {"args": vars(args), "runs": {}}
    view = "VALIDATION view" if args.validation else "test rows"
    print(f"{args.dataset} ({view}), seeds {list(seeds)}, flags {' '.join(args.extra)}")
    print("variant | mean BA | worst-site BA | mean AUC | global mean BA | mean BA per seed")
    for label, _ in variants:
        rows = [r for r in runs if r["_label"] == label]
        cells = [_cell([None if r[k] is None else float(r[k]) for r in rows]) for k in KEYS]
        per_seed = ", ".join(
            f"{r[KEYS[0]]:.3f}"
            + (f" ({r['model_selection']['chosen']})" if "model_selection" in r else "")
            for r in rows
        )
        print(f"{label} | " + " | ".join(cells) + f" | {per_seed}")
        out["runs"][label] = [
            {k: r[k] for k in (*KEYS, "seed")}
            | {"sites": r["sites"], "model_selection": r.get("model_selection")}
            for r in rows
        ]
    if args.per_site:
        names = [s["site"] for s in runs[0]["sites"]]
        print("variant | " + " | ".join(names) + " (personalised BA, mean ± sd over seeds)")
        for label, _ in variants:
            rows = [r for r in runs if r["_label"] == label]
            cells = [
                _cell(
                    [
                        float(s["personalised"]["balanced_accuracy"])
                        for r in rows
                        for s in r["sites"]
                        if s["site"] == name
                    ]
                )
                for name in names
            ]
            print(f"{label} | " + " | ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
