"""Headline keys (balanced accuracy and AUC first, worst site beside the mean) and the
chance-level warning of a run's summary."""

from __future__ import annotations

import io

from rich.console import Console

from fedmap_secure.data.types import Tier
from fedmap_secure.experiments.report import (
    chance_warnings,
    headline,
    site_table,
    summary_dict,
)
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.runtime.results import SimulationResult, SiteResult


def _m(acc: float, ba: float, auc: float | None) -> EvalMetrics:
    return EvalMetrics(n=10, accuracy=acc, balanced_accuracy=ba, roc_auc=auc)


def _result(*metrics: tuple[EvalMetrics | None, EvalMetrics | None]) -> SimulationResult:
    sites = tuple(
        SiteResult(site=f"s{i}", tier=Tier.TRAIN, n_train=5, n_test=10, personalised=p, global_=g)
        for i, (p, g) in enumerate(metrics)
    )
    return SimulationResult(
        method="fedmap", dataset="d", rounds=1, seed=0, sites=sites, reports=(),
        server_logs=(), final_state=None, n_theta=1, n_psi=0, wall_seconds=0.0,
    )  # fmt: skip


def test_headline_means_and_worst_sites() -> None:
    result = _result(
        (_m(0.9, 0.5, None), _m(0.8, 0.7, 0.8)),  # AUC undefined at s0 (one test class)
        (_m(0.7, 0.8, 0.9), None),
    )
    h = headline(result)
    assert h["mean_personalised_balanced_accuracy"] == 0.65
    assert h["worst_site_personalised_balanced_accuracy"] == 0.5
    assert h["mean_personalised_roc_auc"] == 0.9  # over the sites where it is defined
    assert h["mean_personalised_accuracy"] == 0.8
    assert h["mean_global_balanced_accuracy"] == 0.7
    keys = [k for k in summary_dict(result, privacy={}) if k.startswith("mean_")]
    assert keys[0] == "mean_personalised_balanced_accuracy"  # BA leads, accuracy is secondary


def test_table_leads_with_balanced_accuracy() -> None:
    out = io.StringIO()
    Console(file=out, width=200).print(site_table(_result((_m(0.9, 0.5, 0.7), None))))
    header = next(line for line in out.getvalue().splitlines() if "P BA" in line)
    assert header.index("P BA") < header.index("P AUC") < header.index("P acc")
    assert "mean BA 0.500 (worst site 0.500)" in out.getvalue()


def test_chance_warning_per_site_and_for_the_run() -> None:
    at_chance = _m(0.5, 0.52, 0.49)
    good = _m(0.8, 0.8, 0.85)
    thresholded_badly = _m(0.5, 0.5, 0.9)  # ranks well: not flagged
    assert chance_warnings(_result((good, None), (thresholded_badly, None)), n_classes=2) == []
    one = chance_warnings(_result((good, None), (at_chance, None)), n_classes=2)
    assert len(one) == 1
    assert "site 's1'" in one[0]
    every = chance_warnings(_result((at_chance, None), (at_chance, None)), n_classes=2)
    assert len(every) == 3
    assert "may not fit the task" in every[-1]
    # three classes: chance is 1/3, so 0.52 is not at chance
    assert chance_warnings(_result((_m(0.5, 0.52, 0.49), None)), n_classes=3) == []
    summary = summary_dict(_result((at_chance, None)), privacy={}, n_classes=2)
    assert len(summary["warnings"]) == 2
