"""The ``fedmap-secure`` command.

``fedmap-secure simulate --dataset heart --method fedmap --rounds R --seed S --out DIR``
runs every site in one process and writes DIR/summary.json and DIR/metrics.csv.
Any refusal from the library (``FedMapError``) is printed as one line on
stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from fedmap_secure.aggregation import Aggregator, PlainSum
from fedmap_secure.config.loader import load_config
from fedmap_secure.config.schema import Method, PriorForm, SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData
from fedmap_secure.errors import ConfigError, FedMapError
from fedmap_secure.experiments.simulation import ScoreReleaseFactory, TrainerFactory
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig

DatasetLoader = Callable[[str, str | None, int], FederatedDataset]
"""(spec, label_column, seed) -> dataset; injectable for tests."""

POOLED = "pooled"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedmap-secure", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sim = sub.add_parser("simulate", help="run all sites and the server in one process")
    sim.add_argument("--dataset", required=True, help="heart | thyroid | synthetic | csv:DIR")
    sim.add_argument(
        "--method",
        choices=[m.value for m in Method] + [POOLED],
        help="federated method (default from config); 'pooled' is the centralised reference",
    )
    sim.add_argument("--rounds", type=int, help="federated rounds (default from config)")
    sim.add_argument("--seed", type=int, help="run seed (default from config)")
    sim.add_argument("--out", type=Path, default=Path("runs/simulate"), help="output directory")
    sim.add_argument("--config", type=Path, help="TOML file replacing the default configuration")
    sim.add_argument("--label-column", help="label column of csv:DIR datasets")
    sim.add_argument("--prior", choices=[f.value for f in PriorForm], help="ICNN prior form")
    return parser


def resolve_config(args: argparse.Namespace) -> SimulationConfig:
    """Default TOML (or --config FILE), then command-line overrides."""
    config = load_config(args.config)
    changes: dict[str, object] = {}
    if args.method is not None and args.method != POOLED:
        changes["method"] = Method(args.method)
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.prior is not None:
        changes["prior"] = dataclasses.replace(config.prior, form=PriorForm(args.prior))
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def build_aggregator(args: argparse.Namespace) -> Aggregator:
    """The aggregator of a run (secure aggregation will be chosen here)."""
    return PlainSum()


def build_trainer_factory(args: argparse.Namespace, config: SimulationConfig) -> TrainerFactory:
    """The per-site local trainer of a run (DP-SGD will be chosen here)."""
    from fedmap_secure.training.local import AdamMapTrainer

    def factory(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
        return AdamMapTrainer(training)

    return factory


def build_score_release_factory(
    args: argparse.Namespace, config: SimulationConfig
) -> ScoreReleaseFactory | None:
    """How sites release the mean log-likelihood in omega (None: exact; DP chooses here)."""
    return None


def _load_dataset(spec: str, label_column: str | None, seed: int) -> FederatedDataset:
    load = getattr(importlib.import_module("fedmap_secure.data"), "load_dataset", None)
    if load is None:
        raise ConfigError("dataset loaders are not installed in this build")
    dataset: FederatedDataset = load(spec, label_column=label_column, seed=seed)
    return dataset


def _simulate(args: argparse.Namespace, loader: DatasetLoader, console: Console) -> None:
    import torch

    from fedmap_secure.experiments.driver import simulate_to_dir

    # The models are tiny: one intra-op thread is faster than contended threads.
    torch.set_num_threads(1)
    config = resolve_config(args)
    dataset = loader(args.dataset, args.label_column, config.seed)
    simulate_to_dir(
        config=config,
        dataset=dataset,
        aggregator=build_aggregator(args),
        trainer_factory=build_trainer_factory(args, config),
        out_dir=args.out,
        console=console,
        pooled=args.method == POOLED,
        score_release_factory=build_score_release_factory(args, config),
    )


def main(
    argv: Sequence[str] | None = None,
    *,
    dataset_loader: DatasetLoader | None = None,
    console: Console | None = None,
) -> int:
    """Entry point; returns the exit code (0 ok, 2 refused input or configuration)."""
    out = console or Console()
    try:
        args = build_parser().parse_args(argv)
        if args.command == "simulate":
            _simulate(args, dataset_loader or _load_dataset, out)
    except FedMapError as exc:
        print(f"fedmap-secure: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedmap-secure: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
