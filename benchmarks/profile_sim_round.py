"""Where a simulated round's CPU goes: per-component process time of one ``simulate`` run.

Wraps the functions below with a process-time accumulator (``time.process_time``;
about a microsecond per call, so the figures stay close to an unprofiled run,
unlike cProfile, which inflates Python-heavy code several-fold), runs
``fedmap-secure simulate`` in this process with the given arguments, then
writes ``{label: [seconds, calls]}`` as JSON and prints a per-round table.
Nested labels (indented) are parts of the label above them. Only this process
is measured: run it with ``--workers 1`` (a pooled run's sites are in other
processes; the main process's own rows still show the server's share).

    PYTHONPATH=. .venv/bin/python benchmarks/profile_sim_round.py --rounds 2 OUT.json -- \\
        simulate --dataset csv:DIR --label-column y --rounds 2 --out /tmp/p --workers 1

DIR from ``bench_sim_sites.write_sites(DIR, 100, 300)``.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import importlib
import json
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = (
    ("fedmap_secure.runtime.inprocess", "InProcessChannel.run_round", "round (all of it)"),
    ("fedmap_secure.runtime.site", "SiteRuntime.train_round", " site: train_round"),
    ("fedmap_secure.runtime.site", "SiteRuntime._record", "  evaluation + report"),
    ("fedmap_secure.training.dp_training", "DpSgdMapTrainer.train", "  DP-SGD (Opacus)"),
    ("fedmap_secure.runtime.privacy", "SitePrivacy.admit", "  ledger charge (fsync)"),
    ("fedmap_secure.fedmap.site", "Site.contribute", "  score + contribution"),
    ("fedmap_secure.secagg.inprocess", "SecureAggregator.aggregate", " SecAgg (all of it)"),
    ("fedmap_secure.secagg.client", "ClientSession._on_keys", "  client: keys"),
    ("fedmap_secure.secagg.client", "verify_advertisement", "   verify advertisements"),
    ("fedmap_secure.secagg.client", "check_public_keys", "   low-order key probes"),
    ("fedmap_secure.secagg.client", "ClientSession._share", "   Shamir + AEAD seal"),
    ("fedmap_secure.secagg.client", "ClientSession._on_shares", "  client: open shares"),
    ("fedmap_secure.secagg.client", "ClientSession._mask", "  client: mask (X25519+PRG)"),
    ("fedmap_secure.secagg.client", "ClientSession._on_unmask", "  client: unmask"),
    ("fedmap_secure.secagg.server", "ServerSession.receive", "  server: receive"),
    ("fedmap_secure.secagg.server", "ServerSession.finish", "  server: finish (unmask)"),
    ("fedmap_secure.transcript.store", "SiteRecordWriter.__call__", "  site records (fsync)"),
    ("fedmap_secure.runtime.privacy", "SitePrivacy.open", "per run: ledger open + calibration"),
    ("fedmap_secure.runtime.site", "SiteRuntime.finish", "per run: final step"),
)

TOTALS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[label] += time.process_time() - start
            CALLS[label] += 1

    return wrapper


def instrument() -> None:
    for module_name, qualname, label in TARGETS:
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _timed(label, getattr(owner, name)))


def report(out: Path, rounds: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    TOTALS["process CPU (whole run)"] = usage.ru_utime + usage.ru_stime
    CALLS["process CPU (whole run)"] = 1
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # a pool's workers, once joined
    TOTALS["worker processes CPU (whole run)"] = children.ru_utime + children.ru_stime
    CALLS["worker processes CPU (whole run)"] = 1
    out.write_text(json.dumps({k: [TOTALS[k], CALLS[k]] for k in TOTALS}, indent=1) + "\n")
    print(f"{'component':40s} {'CPU s/round':>12s} {'calls':>8s}", file=sys.stderr)
    labels = [label for _, _, label in TARGETS] + ["process CPU (whole run)"]
    labels.append("worker processes CPU (whole run)")
    for label in labels:
        if label in TOTALS:
            per = (
                TOTALS[label]
                if label.startswith("per run") or "whole" in label
                else (TOTALS[label] / rounds)
            )
            print(f"{label:40s} {per:12.2f} {CALLS[label]:8d}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="JSON file for the totals")
    parser.add_argument("--rounds", type=int, required=True, help="the run's rounds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- simulate ...")
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"]
    instrument()
    atexit.register(report, args.out, args.rounds)
    from fedmap_secure.cli import main as cli_main

    code = cli_main(command)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
