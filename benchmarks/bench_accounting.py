"""Privacy accounting cost: ledger charge vs round count, calibration, private/non-private CPU.

Three parts, all measured side by side in one process (CPU seconds from
``time.process_time`` / ``resource.getrusage``; no timed assertion anywhere):

1. **Charge cost vs rounds.** A PLD ledger (in memory) charged with the heart
   round of one site (10 Poisson-subsampled Gaussian steps + one omega
   Gaussian) for R rounds; the median CPU time of the last 5 charges is
   reported for R in 10, 20, 50, 100, beside a full recomposition of the same
   history (what every charge cost before incremental accounting).
2. **Calibration** of the four heart sites' plans (epsilon 4, 20 rounds),
   CPU seconds, with the curve cache cleared first.
3. **Private vs non-private run** (``--with-runs``): ``fedmap-secure simulate
   --dataset heart`` (DP + SecAgg, default) and the same with ``--no-dp``,
   run alternately (A B A B ...), the children's user+system CPU per run from
   ``resource.getrusage(RUSAGE_CHILDREN)``, and the ratio A/B taken pair by pair
   (median reported).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_accounting.py [--with-runs --pairs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedmap_secure.privacy import accountants, dp_accounting_accountants
from fedmap_secure.privacy.accountants import DpAccountingPldAccountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.events import Event, GaussianEvent, SubsampledGaussianEvent
from fedmap_secure.privacy.ledger import MemoryLedgerStore, PrivacyLedger
from fedmap_secure.privacy.ledger_store import open_site_ledger

ROUND: list[Event] = [
    SubsampledGaussianEvent(noise_multiplier=4.97, sample_rate=0.1608, steps=10),
    GaussianEvent(noise_multiplier=38.59),
]


def _clear_shared() -> None:
    """Forget the process-wide PLD compositions (each measurement starts cold)."""
    dp_accounting_accountants._shared.clear()
    dp_accounting_accountants._shared_epsilon.clear()


def charge_costs(rounds: int, sites: int = 1, sqlite: bool = False) -> tuple[float, float, float]:
    """(median ms per charge over the last 5 rounds, ms per full recomposition, final epsilon).

    ``sites`` ledgers with the same plan are charged round by round (as an in-process
    simulation does); the figure is the round's total divided by ``sites``. ``sqlite``:
    durable ``SqliteLedgerStore`` files (fsync per charge) instead of memory.
    """
    _clear_shared()
    pld = DpAccountingPldAccountant()
    budget = Budget(epsilon=1e2, delta=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        ledgers = [
            open_site_ledger(Path(tmp) / str(i), budget=budget, accountant=pld)
            if sqlite
            else PrivacyLedger(MemoryLedgerStore(), budget, pld)
            for i in range(sites)
        ]
        times: list[float] = []
        for r in range(rounds):
            start = time.process_time()
            for ledger in ledgers:
                receipt = ledger.charge(r, ROUND, note="")
            times.append((time.process_time() - start) / sites)
        for ledger in ledgers:
            ledger.close()
    start = time.process_time()
    full = pld.epsilon(ROUND * rounds, 1e-5)
    full_ms = (time.process_time() - start) * 1e3
    assert abs(full - receipt.epsilon_after) < 1e-3
    return statistics.median(times[-5:]) * 1e3, full_ms, receipt.epsilon_after


def calibration_seconds() -> float:
    from fedmap_secure.config.privacy import PrivacyConfig
    from fedmap_secure.data import load_dataset
    from fedmap_secure.data.types import Tier
    from fedmap_secure.runtime import privacy as private_site

    sites = load_dataset("heart").by_tier(Tier.TRAIN)
    accountants._CURVES.clear()
    private_site._calibrated_plan.cache_clear()
    start = time.process_time()
    for site in sites:
        private_site.plan_site_privacy(site, PrivacyConfig(epsilon=4.0), 20)
    return time.process_time() - start


def _child_cpu(command: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_ratio(pairs: int) -> dict[str, object]:
    exe = str(Path(sys.executable).with_name("fedmap-secure"))
    private: list[float] = []
    plain: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(pairs):
            a = [exe, "simulate", "--dataset", "heart", "--out", f"{tmp}/p{i}"]
            b = [*a[:-1], f"{tmp}/n{i}", "--no-dp"]
            private.append(_child_cpu(a))
            plain.append(_child_cpu(b))
    ratios = [p / n for p, n in zip(private, plain, strict=True)]
    return {
        "private_cpu_s": private,
        "non_private_cpu_s": plain,
        "ratio_per_pair": ratios,
        "median_ratio": statistics.median(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-runs", action="store_true")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, object] = {"charge": {}}
    print(
        "rounds | charge ms (1 site, memory) | (1 site, SQLite) | (per site, 100 sites one plan,"
        " SQLite) | full recomposition ms | eps"
    )
    for rounds in (10, 20, 50, 100, 200):
        inc, full, eps = charge_costs(rounds)
        disk, _, _ = charge_costs(rounds, sqlite=True)
        shared, _, _ = charge_costs(rounds, sites=100, sqlite=True)
        result["charge"][str(rounds)] = {  # type: ignore[index]
            "incremental_ms": inc,
            "sqlite_ms": disk,
            "sqlite_per_site_100_sites_ms": shared,
            "full_ms": full,
            "epsilon": eps,
        }
        print(f"{rounds:6d} | {inc:8.2f} | {disk:8.2f} | {shared:8.2f} | {full:8.2f} | {eps:.3f}")
    result["calibration_4_heart_sites_cpu_s"] = calibration_seconds()
    print(
        "calibration, 4 heart sites, epsilon 4: "
        f"{result['calibration_4_heart_sites_cpu_s']:.2f} s CPU"
    )
    if args.with_runs:
        result["runs"] = run_ratio(args.pairs)
        print(json.dumps(result["runs"], indent=1))


if __name__ == "__main__":
    main()
