"""The ``fedmap-secure`` command.

``fedmap-secure simulate --dataset heart --method fedmap --rounds R --seed S --out DIR``
runs every site in one process, with secure aggregation among the training sites
and per-site differential privacy by default (``--no-secagg``, ``--no-dp``), and
writes DIR/summary.json, DIR/metrics.csv and each private site's ledger under
DIR/sites/<site>/; with SecAgg on, the server's round transcripts go to
DIR/transcripts/, the roster to DIR/roster.json and each site's record to
DIR/site-records/. ``--transport grpc`` runs the server here and one process
per training site on 127.0.0.1.
``fedmap-secure server --config server.toml`` / ``site --config site.toml`` /
``keygen`` run a real deployment (``transport.commands``).
``fedmap-secure verify-transcript PATHS... --roster FILE [--site-records DIR]
[--head HEX]`` checks transcripts offline (exit 0 verified, 1 failed, 2 unusable input).
``fedmap-secure ledger show --site-state DIR [--json]`` prints a site's ledger.
Any refusal from the library (``FedMapError``) is printed as one line on
stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import fedmap_secure.process_clock  # noqa: F401  (early: the process start where /proc is absent)
from fedmap_secure.config.loader import load_config
from fedmap_secure.config.privacy import ClientDpMechanism, OmegaRelease, PrivacyConfig
from fedmap_secure.config.schema import (
    Method,
    PriorForm,
    SimulationConfig,
    check_model_selection,
)
from fedmap_secure.data.schema_command import add_schema_command, run_schema_command
from fedmap_secure.errors import ConfigError, FedMapError
from fedmap_secure.privacy.accountant_base import AccountantName
from fedmap_secure.runtime.workers import parse_workers
from fedmap_secure.transport.commands import (
    add_commands,
    add_simulate_options,
    run_command,
)

if TYPE_CHECKING:
    # Only for annotations: the CLI parses its arguments (and prints --help or an
    # argument error) before torch, Opacus, dp-accounting, gRPC or Ray is imported.
    from rich.console import Console

    from fedmap_secure.data.types import FederatedDataset, SiteData
    from fedmap_secure.runtime.results import TrainerFactory
    from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig

DatasetLoader = Callable[[str, str | None, int], "FederatedDataset"]
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
    _add_privacy_arguments(sim)
    add_simulate_options(sim)
    sim.add_argument(
        "--workers",
        default="1",
        metavar="N|auto",
        help="in-process transport: run the sites' rounds in N local worker processes "
        "(default 1: serial; auto: min(cores, sites // 8), at least 1); results are the same "
        "(with --site-batching off bit for bit; batched, to float rounding)",
    )
    sim.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch intra-op threads per process (default 1: a simulation's ops are small, and "
        "on a busy machine contended threads cost 10-20x; see benchmarks/README.md)",
    )
    sim.add_argument(
        "--site-batching",
        choices=["auto", "off"],
        default="auto",
        help="in-process transport, DP off: auto (default) trains the sites of one process "
        "together (same batches and steps, weights equal up to float rounding); off: one "
        "site after another",
    )
    add_commands(sub)
    _add_verify_transcript(sub)
    add_schema_command(sub)
    ledger = sub.add_parser("ledger", help="inspect a site's privacy ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)
    show = ledger_sub.add_parser(
        "show", help="per round: mechanisms, cumulative epsilon, remaining"
    )
    show.add_argument("--site-state", type=Path, required=True, help="the site's state directory")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    # Listed for --help only: main() hands these to their own parsers before parsing.
    sub.add_parser("sweep", help="run a resumable privacy-utility sweep (see sweep --help)")
    sub.add_parser(
        "report", help="build report.md and plots of a sweep or of one run (see report --help)"
    )
    return parser


def _add_verify_transcript(sub: Any) -> None:
    verify = sub.add_parser(
        "verify-transcript",
        help="check round transcripts offline against the roster (exit 0 ok, 1 failed, 2 input)",
    )
    verify.add_argument(
        "paths", nargs="+", type=Path, help="transcript files or folders of round-*.json"
    )
    verify.add_argument("--roster", type=Path, required=True, help="roster.json (site keys)")
    verify.add_argument(
        "--site-records", type=Path, help="folder of the sites' own records to cross-check"
    )
    verify.add_argument("--head", help="published hex hash of the newest transcript")


def _add_privacy_arguments(sim: argparse.ArgumentParser) -> None:
    dp = sim.add_argument_group("privacy (defaults from the [privacy] and [secagg] config)")
    dp.add_argument("--epsilon", type=float, help="each training site's epsilon budget")
    dp.add_argument("--delta", type=float, help="delta (a site uses min(delta, 1/(10 n)))")
    dp.add_argument("--no-dp", action="store_true", help="switch differential privacy off")
    dp.add_argument(
        "--accountant", choices=[a.value for a in AccountantName], help="privacy accountant"
    )
    dp.add_argument(
        "--omega-release", choices=[o.value for o in OmegaRelease], help="score release mode"
    )
    dp.add_argument(
        "--reproducible-noise",
        action="store_true",
        help="DP noise from a stream seeded by --seed: reproducible, NOT secret",
    )
    dp.add_argument("--no-secagg", action="store_true", help="plain sum instead of SecAgg")
    dp.add_argument(
        "--client-epsilon",
        type=float,
        help="switch client-level DP on with this budget (noise added inside SecAgg)",
    )
    dp.add_argument(
        "--client-mechanism",
        choices=[m.value for m in ClientDpMechanism],
        help="client-level noise: ddg (distributed discrete Gaussian) or skellam",
    )


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
    changes["privacy"] = _privacy_overrides(args, config.privacy)
    if args.no_secagg:
        changes["secagg"] = dataclasses.replace(config.secagg, enabled=False)
    client: dict[str, object] = {}
    if args.client_epsilon is not None:
        client.update(enabled=True, epsilon=args.client_epsilon)
    if args.client_mechanism is not None:
        client["mechanism"] = ClientDpMechanism(args.client_mechanism)
    if client:
        changes["client_dp"] = dataclasses.replace(config.client_dp, **client)  # type: ignore[arg-type]
    return dataclasses.replace(config, **changes)  # type: ignore[arg-type]


def _privacy_overrides(args: argparse.Namespace, privacy: PrivacyConfig) -> PrivacyConfig:
    changes: dict[str, object] = {}
    for name in ("epsilon", "delta"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.accountant is not None:
        changes["accountant"] = AccountantName(args.accountant)
    if args.omega_release is not None:
        changes["omega_release"] = OmegaRelease(args.omega_release)
    if args.reproducible_noise:
        changes["reproducible_noise"] = True
    if args.no_dp:
        changes["enabled"] = False
    return dataclasses.replace(privacy, **changes)  # type: ignore[arg-type]


def build_trainer_factory(args: argparse.Namespace, config: SimulationConfig) -> TrainerFactory:
    """The non-private per-site trainer (``--no-dp`` runs, pooled, non-releasing sites)."""
    from fedmap_secure.training.local import AdamMapTrainer

    def factory(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
        return AdamMapTrainer(training)

    return factory


def _load_dataset(spec: str, label_column: str | None, seed: int) -> FederatedDataset:
    load = getattr(importlib.import_module("fedmap_secure.data"), "load_dataset", None)
    if load is None:
        raise ConfigError("dataset loaders are not installed in this build")
    dataset: FederatedDataset = load(spec, label_column=label_column, seed=seed)
    return dataset


def _simulate(args: argparse.Namespace, loader: DatasetLoader, console: Console) -> None:
    config = resolve_config(args)  # refusals of the configuration come before any heavy import
    workers = parse_workers(args.workers)
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    check_model_selection(config)
    if args.transport == "grpc":
        _check_grpc(args, config)
    dataset = loader(args.dataset, args.label_column, config.seed)
    import torch

    from fedmap_secure.experiments.driver import simulate_to_dir

    # Thread rule (benchmarks/README.md): one intra-op thread per process by default; the
    # cores are used by batching the sites' training and by --workers processes.
    torch.set_num_threads(args.threads)
    from fedmap_secure.data.contract import bind_config

    config = bind_config(config, dataset.schema, source=args.dataset)  # names + schema digest
    if args.transport == "grpc":
        _simulate_grpc(args, config, dataset, console)
        return
    simulate_to_dir(
        config=config,
        dataset=dataset,
        trainer_factory=build_trainer_factory(args, config),
        out_dir=args.out,
        console=console,
        pooled=args.method == POOLED,
        site_state=args.site_state,
        workers=workers,
        site_batching=args.site_batching == "auto",
    )


def _check_grpc(args: argparse.Namespace, config: SimulationConfig) -> None:
    if config.model.candidates:
        raise ConfigError(
            "[model] candidates (model selection on validation) runs in-process only; "
            "choose the model first and set [model] kind/hidden for --transport grpc"
        )
    if args.method == POOLED:
        raise ConfigError("--method pooled is centralised: it has no --transport grpc")
    if not config.secagg.enabled:
        raise ConfigError("--transport grpc always uses secure aggregation: drop --no-secagg")


def _simulate_grpc(
    args: argparse.Namespace,
    config: SimulationConfig,
    dataset: FederatedDataset,
    console: Console,
) -> None:
    from fedmap_secure.experiments.driver import progress_bar
    from fedmap_secure.experiments.grpc_run import grpc_spec, simulate_grpc_to_dir

    overrides: dict[str, Any] = {
        "dropout_fraction": config.secagg.dropout_fraction,
        "corrupt_fraction": config.secagg.corrupt_fraction,
        "max_colluding_sites": config.secagg.max_colluding_sites,
    }
    if config.client_dp.enabled:  # its noise needs the configured ring (default 64 bits)
        overrides["bits"] = config.secagg.bits
    if config.privacy.enabled:
        console.print("each training site process calibrates its DP noise from its own budget ...")
    with progress_bar(console, f"{config.method.value} on {dataset.name} (gRPC)") as progress:
        simulate_grpc_to_dir(
            config=config,
            dataset=dataset,
            spec=grpc_spec(args, **overrides),
            out_dir=args.out,
            console=console,
            progress=progress,
        )


def _verify_transcript(args: argparse.Namespace) -> int:
    from fedmap_secure.transcript.store import verify_transcript_cli

    return verify_transcript_cli(
        args.paths, args.roster, site_records=args.site_records, head=args.head
    )


def _ledger_show(args: argparse.Namespace, console: Console) -> None:
    from fedmap_secure.privacy.ledger_store import ledger_path, load_report

    if not ledger_path(args.site_state).is_file():
        raise ConfigError(f"no privacy ledger in {str(args.site_state)!r}")
    report = load_report(args.site_state)
    if args.json:
        console.print_json(json.dumps(report.to_json(), allow_nan=False))
    else:
        console.print(report.to_table())


def main(
    argv: Sequence[str] | None = None,
    *,
    dataset_loader: DatasetLoader | None = None,
    console: Console | None = None,
) -> int:
    """Entry point; returns the exit code (0 ok, 2 refused input or configuration;
    ``verify-transcript`` returns 1 when verification fails)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # the real command: SIGTERM stops it like Ctrl-C (cleanup runs)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if arguments[:1] in (["sweep"], ["report"]):
            return _experiment_command(arguments[0], arguments[1:], console or _console())
        args = build_parser().parse_args(arguments)
        out = console or _console()
        if args.command == "simulate":
            _simulate(args, dataset_loader or _load_dataset, out)
        elif args.command == "ledger":
            _ledger_show(args, out)
        elif args.command == "verify-transcript":
            return _verify_transcript(args)
        elif args.command == "schema":
            run_schema_command(args, out)
        else:
            run_command(args, out)
    except FedMapError as exc:
        print(f"fedmap-secure: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedmap-secure: interrupted", file=sys.stderr)
        return 130
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM -> KeyboardInterrupt: ``finally`` blocks stop child processes and close ledgers."""
    raise KeyboardInterrupt


def _console() -> Console:
    from rich.console import Console

    return Console()


def _experiment_command(name: str, rest: Sequence[str], console: Console) -> int:
    """``sweep`` and ``report`` have their own parsers (fedmap_secure.experiments.sweep)."""
    from fedmap_secure.experiments.sweep.cli import report_main, sweep_main

    if name == "sweep":
        return sweep_main(rest, console=console)
    return report_main(rest, console=console)


if __name__ == "__main__":
    sys.exit(main())
