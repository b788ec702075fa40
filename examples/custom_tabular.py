"""Your own tabular model on your own CSV sites, with DP-SGD, secure aggregation and FedMAP.

A site folder holds ``<site>_train.csv`` and ``<site>_test.csv`` per site (the
same layout as ``fedmap-secure simulate --dataset csv:DIR``), numeric feature
columns and one label column of class indices 0..K-1 (or class names, listed
with ``--classes``). Scale the features with constants the consortium agrees on
beforehand (public), not with each site's own statistics.

    python examples/custom_tabular.py --sites DIR --label-column outcome
    python examples/custom_tabular.py --make-demo-sites runs/demo-sites   # writes a folder,
                                                                         # then trains on it
    python examples/custom_tabular.py --make-demo-sites DIR --tiny        # a few seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import fedmap_secure as fs


class TabularNet(nn.Module):
    """Linear - LayerNorm - GELU - Linear - GELU - Linear: a model none of the built-in
    kinds provide. LayerNorm normalises each record on its own, so DP-SGD can clip each
    record's gradient (BatchNorm could not: it mixes the records of a batch)."""

    def __init__(self, n_features: int, n_classes: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(n_features, width),
            nn.LayerNorm(width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
        )
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


def make_demo_sites(directory: Path, *, seed: int = 0, rows: int = 400) -> None:
    """Four hospitals, three outcome classes, shifted feature distributions (synthetic)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(6, 3))
    directory.mkdir(parents=True, exist_ok=True)
    for k, site in enumerate(["north", "south", "east", "west"]):
        x = rng.normal(loc=0.3 * k, size=(rows, 6))
        logits = x @ weights + rng.normal(scale=0.5, size=(rows, 3)) + np.array([0.0, 0.3 * k, 0])
        frame = pd.DataFrame(x, columns=[f"marker_{i}" for i in range(6)]).round(4)
        frame["outcome"] = logits.argmax(axis=1)
        cut = rows * 3 // 4
        frame.iloc[:cut].to_csv(directory / f"{site}_train.csv", index=False)
        frame.iloc[cut:].to_csv(directory / f"{site}_test.csv", index=False)


def read_sites(
    directory: Path, label_column: str, classes: Sequence[str] | None, limit: int | None
) -> list[fs.Site]:
    sites = []
    for train in sorted(directory.glob("*_train.csv")):
        name = train.name.removesuffix("_train.csv")
        test = train.with_name(f"{name}_test.csv")
        sites.append(
            fs.Site.from_dataframe(
                name,
                pd.read_csv(train, nrows=limit),
                pd.read_csv(test, nrows=limit) if test.is_file() else None,
                label_column=label_column,
                classes=classes,
            )
        )
    if not sites:
        raise SystemExit(f"no <site>_train.csv files in {directory}")
    return sites


def main(argv: Sequence[str] | None = None) -> fs.SimulationRun:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sites", type=Path, help="your site folder")
    where.add_argument("--make-demo-sites", type=Path, help="write a synthetic folder here")
    parser.add_argument("--label-column", default="outcome")
    parser.add_argument("--classes", help="comma-separated class names, if labels are names")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--out", default="runs/custom-tabular")
    parser.add_argument("--tiny", action="store_true", help="2 rounds on 40 rows per site")
    args = parser.parse_args(argv)
    directory = args.sites
    if args.make_demo_sites is not None:
        make_demo_sites(args.make_demo_sites)
        directory = args.make_demo_sites
    classes = None if args.classes is None else args.classes.split(",")
    sites = read_sites(directory, args.label_column, classes, 40 if args.tiny else None)
    n_features = sites[0].feature_shape[0]
    n_classes = len(classes) if classes else 1 + max(int(s.y_train.max()) for s in sites)
    config = fs.load_config()  # or fs.load_config(Path("run.toml")): the CLI's TOML
    config = dataclasses.replace(
        config,
        rounds=2 if args.tiny else args.rounds,
        privacy=dataclasses.replace(config.privacy, epsilon=args.epsilon),
    )
    torch.set_num_threads(1)
    run = fs.simulate(
        config,
        sites,
        model=functools.partial(TabularNet, n_features, n_classes),
        n_classes=n_classes,
        out=args.out,
    )
    for name, site in run.sites.items():
        mine = site.personalised.balanced_accuracy if site.personalised else float("nan")
        print(
            f"{name}: personalised macro balanced accuracy {mine:.3f}, "
            f"epsilon spent {site.epsilon_spent}"
        )
    return run


if __name__ == "__main__":
    main()
