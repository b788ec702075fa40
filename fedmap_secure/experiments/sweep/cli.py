"""Entry points of ``fedmap-secure sweep`` and ``fedmap-secure report``.

``sweep_main(argv)`` / ``report_main(argv)`` take the arguments after the
sub-command and return the exit code: 0 all runs finished, 1 some runs
failed (recorded in DIR/runs/<id>/error.json), 2 refused input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from fedmap_secure.errors import ConfigError, FedMapError
from fedmap_secure.experiments.sweep.runner import Backend
from fedmap_secure.experiments.sweep.spec import NO_DP, load_sweep


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def sweep_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fedmap-secure sweep", description="run a privacy-utility sweep")
    p.add_argument("--config", type=Path, required=True, help="sweep TOML file")
    p.add_argument("--out", type=Path, required=True, help="result directory (resumable)")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: CPUs)"
    )
    p.add_argument("--backend", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    p.add_argument("--start-method", choices=["spawn", "forkserver"], default="spawn")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    return p


def _backend(args: argparse.Namespace) -> Backend:
    from fedmap_secure.experiments.sweep.backends import ProcessBackend, RayBackend

    if args.backend == "ray":
        return RayBackend(address=args.address, num_cpus=args.workers)
    if args.address is not None:
        raise ConfigError("--address is only meaningful with --backend ray")
    return ProcessBackend(workers=args.workers, start_method=args.start_method)


def _sweep(argv: Sequence[str] | None, console: Console) -> int:
    args = sweep_parser().parse_args(argv)
    from fedmap_secure.experiments.sweep.runner import pending, run_sweep

    specs = load_sweep(args.config)
    todo = pending(specs, args.out)
    console.print(f"{len(specs)} runs, {len(specs) - len(todo)} already finished")
    if args.dry_run:
        for spec in todo:
            console.print(spec.run_id, highlight=False)
        return 0
    report = run_sweep(specs, args.out, backend=_backend(args), console=console)
    for outcome in report.failed:
        console.print(f"[red]failed[/red] {outcome.run_id}: {outcome.error}", highlight=False)
    done = len(report.outcomes) - len(report.failed)
    console.print(f"{done} finished, {len(report.failed)} failed, {report.skipped} skipped")
    return 1 if report.failed else 0


def report_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fedmap-secure report",
        description="build report.md and plots of a sweep, or of one run (a simulate --out "
        "directory: learning curves per site, the per-site table, epsilon over rounds)",
    )
    p.add_argument("dir", type=Path, help="sweep result directory or one run's directory")
    p.add_argument(
        "--epsilon",
        help=f"privacy level of the per-site tables: a number or {NO_DP!r} (default: 1 if run)",
    )
    return p


def _report(argv: Sequence[str] | None, console: Console) -> int:
    args = report_parser().parse_args(argv)  # before the plotting imports: errors come fast
    from fedmap_secure.experiments.run_report import build_run_report, is_run_dir

    if is_run_dir(args.dir):
        if args.epsilon is not None:
            raise ConfigError("--epsilon applies to a sweep report, not to one run")
        console.print(f"wrote {build_run_report(args.dir)}")
        return 0
    from fedmap_secure.experiments.sweep.report import AUTO, build_report

    epsilon: float | str | None = AUTO
    if args.epsilon == NO_DP:
        epsilon = None
    elif args.epsilon is not None:
        try:
            epsilon = float(args.epsilon)
        except ValueError:
            raise ConfigError(f"--epsilon must be a number or {NO_DP!r}") from None
    console.print(f"wrote {build_report(args.dir, epsilon=epsilon)}")
    return 0


Command = Callable[[Sequence[str] | None, Console], int]


def _guard(name: str, fn: Command, argv: Sequence[str] | None, console: Console | None) -> int:
    out = console or Console(stderr=True)
    try:
        return fn(argv, out)
    except FedMapError as exc:
        print(f"fedmap-secure {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedmap-secure {name}: interrupted (re-run to resume)", file=sys.stderr)
        return 130


def sweep_main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """``fedmap-secure sweep --config FILE --out DIR [--workers N] [--backend local|ray]``."""
    return _guard("sweep", _sweep, argv, console)


def report_main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """``fedmap-secure report DIR [--epsilon E|none]``."""
    return _guard("report", _report, argv, console)
