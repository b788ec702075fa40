"""Empirical epsilon lower bound vs claimed epsilon for DpSgdMapTrainer on heart-sized data.

Base records: the bundled Cleveland heart-disease site (199 training rows, 13
features, 2 classes). For each claimed epsilon in {1, 2, 4, 8} (delta 1e-5) the
site's own calibration (``calibrate_noise_multiplier``, default accountant:
dp-accounting PLD) picks the noise for the plan; the trainer then runs with
exactly that noise, m Dirac canaries (default 1000) (each included with probability 1/2)
are inserted, and the one-run audit (Steinke, Nasr and Jagielski 2023, 95%
confidence, Bonferroni over 4 guess counts) reports a lower bound. Two bug
rows follow: noise switched off while claiming epsilon 1, and noise 0.05 while
the accountant was told the noise for epsilon 2; a third, subtler bug row runs
a quarter of the noise calibrated for epsilon 1 (to show the audit's reach).
The threshold column is the Jagielski et al. 2020 bound on the same scores: a
heuristic here (it assumes independent runs).

Two plans: "full-batch" (q = 1, 5 steps: the setting where one-run audits are
tightest) and "minibatch" (q = 0.2, 25 steps, roughly 5 epochs at batch ~32
of the base records). With m canaries and 95% confidence no audit can show
more than about log(m / 3) (~5.8 for m = 1000): a claim above that cannot be
refuted by this audit size.

Run (~1 minute on one core):
    PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_audit.py
    PYTHONPATH=. /work/devvenv/bin/python benchmarks/bench_audit.py --seeds 1 --canaries 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from fedmap_secure.data.heart import load_heart
from fedmap_secure.experiments.audit import (
    AuditConfig,
    AuditReport,
    claimed_epsilon,
    run_audit,
)
from fedmap_secure.privacy.accountants import calibrate_noise_multiplier
from fedmap_secure.privacy.audit import threshold_audit
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.training.dp_config import DpSgdConfig, InnerOptimizer
from fedmap_secure.training.dp_training import DpSgdMapTrainer

DELTA = 1e-5
PLANS = {"full-batch": (1.0, 5), "minibatch": (0.2, 25)}


@dataclass(frozen=True)
class Case:
    label: str
    actual_noise: float
    told_noise: float


@dataclass(frozen=True)
class Row:
    plan: str
    case: str
    actual_noise: float
    claimed: float
    one_run: list[float]
    threshold: list[float]
    seconds: float


def cases(sample_rate: float, steps: int) -> list[Case]:
    out = []
    for eps in (1.0, 2.0, 4.0, 8.0):
        sigma = calibrate_noise_multiplier(
            Budget(epsilon=eps, delta=DELTA),
            sample_rate=sample_rate,
            steps_per_round=steps,
            rounds=1,
        )
        out.append(Case(f"correct, eps {eps:g}", sigma, sigma))
    out.append(Case("BUG noise off, claim eps 1", 0.0, out[0].actual_noise))
    out.append(Case("BUG noise 0.05, claim eps 2", 0.05, out[1].actual_noise))
    quarter = out[0].actual_noise / 4.0
    out.append(Case("BUG noise 1/4 of claim eps 1", quarter, out[0].actual_noise))
    return out


@dataclass(frozen=True)
class Setup:
    canaries: int
    seeds: int


def one_audit(
    x: np.ndarray, y: np.ndarray, case: Case, plan: tuple[float, int], seed: int, setup: Setup
) -> tuple[AuditReport, float]:
    sample_rate, steps = plan
    dp = DpSgdConfig(
        noise_multiplier=case.actual_noise,
        max_grad_norm=1.0,
        sample_rate=sample_rate,
        steps=steps,
        optimizer=InnerOptimizer.SGD,
        learning_rate=1.0,
        reproducible_seed=seed,
    )
    claim = claimed_epsilon(
        noise_multiplier=case.told_noise, sample_rate=sample_rate, steps=steps, delta=DELTA
    )
    report = run_audit(
        lambda: DpSgdMapTrainer(dp),
        x=x,
        y=y,
        claimed_epsilon=claim,
        config=AuditConfig(n_canaries=setup.canaries, delta=DELTA, seed=seed),
    )
    thresholds = [float(t) for t in np.quantile(report.scores, (0.5, 0.75, 0.9))]
    heuristic = threshold_audit(report.scores, report.included, thresholds=thresholds, delta=DELTA)
    return report, heuristic.epsilon_lower_bound


def run(setup: Setup) -> list[Row]:
    site = next(s for s in load_heart().sites if s.name == "cleveland")
    rows = []
    for plan_name, plan in PLANS.items():
        for case in cases(*plan):
            start = time.perf_counter()
            one_run, threshold, claim = [], [], 0.0
            for seed in range(setup.seeds):
                report, heuristic = one_audit(site.x_train, site.y_train, case, plan, seed, setup)
                one_run.append(report.result.epsilon_lower_bound)
                threshold.append(heuristic)
                claim = report.claimed_epsilon
            seconds = (time.perf_counter() - start) / setup.seeds
            rows.append(
                Row(plan_name, case.label, case.actual_noise, claim, one_run, threshold, seconds)
            )
    return rows


def print_table(rows: list[Row], setup: Setup) -> None:
    print(
        f"canaries: {setup.canaries} Dirac; delta {DELTA:g}; 95% confidence; "
        f"{setup.seeds} seed(s); base: heart/cleveland (199 x 13)"
    )
    header = (
        f"{'plan':<11} {'case':<28} {'sigma':>7} {'claimed':>8} "
        f"{'one-run mean':>12} {'max':>6} {'thresh.*':>8} {'refuted':>8} {'s/run':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        refuted = sum(lb > r.claimed for lb in r.one_run)
        print(
            f"{r.plan:<11} {r.case:<28} {r.actual_noise:>7.3f} {r.claimed:>8.3f} "
            f"{statistics.mean(r.one_run):>12.3f} {max(r.one_run):>6.3f} "
            f"{statistics.mean(r.threshold):>8.3f} {f'{refuted}/{len(r.one_run)}':>8} "
            f"{r.seconds:>6.2f}"
        )
    print(
        "* threshold = Jagielski et al. 2020 bound on one run's canaries: heuristic, not a proof."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--canaries", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup = Setup(args.canaries, args.seeds)
    print_table(run(setup), setup)


if __name__ == "__main__":
    main()
