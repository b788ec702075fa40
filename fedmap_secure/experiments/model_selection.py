"""Per-run model selection on validation rows among configured candidates (issue 16).

``[model] candidates = ["logistic", "mlp:16", "mlp:32"]`` makes ``simulate`` run the
whole federation once per candidate on the *validation view* of the data
(``experiments.validation``: each training site's training rows split 80/20, the
test rows never read), with the run's method, rounds, seed, aggregation and
training settings, and then the real run with the candidate whose mean
personalised validation balanced accuracy over the sites is highest (ties: the
higher mean validation AUC, then the earlier candidate in the list). Every
candidate's figures, the choice and any chance-level warning on validation are
written to summary.json (``model_selection``) and logged.

Chance on validation: a candidate whose mean validation balanced accuracy and mean
validation AUC are both within ``CHANCE_MARGIN`` of chance (1/K, 0.5) is flagged, and when *every*
candidate is, the run says that no configured model fits the task.

Privacy: the selection reads the sites' training rows, so under DP every
candidate run would be a release, and choosing among them by their results
composes (Papernot and Steinke, "Hyperparameter tuning with Renyi differential
privacy", ICLR 2022: even a random-search with a random number of trials costs a
constant multiple of one run's epsilon). This module does not implement that
accounting: it refuses a run with record-level or client-level DP on
(``check_model_selection``). Private runs choose their model on public or synthetic
data (``benchmarks/tune.py``) and fix ``[model] kind`` / ``hidden``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedmap_secure.config.schema import (
    ModelConfig,
    SimulationConfig,
    check_model_selection,
    parse_candidate,
)
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.experiments.report import CHANCE_MARGIN
from fedmap_secure.experiments.validation import validation_dataset
from fedmap_secure.runtime.results import SimulationResult

log = logging.getLogger(__name__)

SELECTION_DIR = "model-selection"
"""Where the candidate runs write their outputs, under the run's output folder."""

CandidateRun = Callable[[SimulationConfig, FederatedDataset, Path], SimulationResult]
"""Runs one candidate's federation on the validation view, outputs under the given folder."""


def candidate_model(spec: str) -> ModelConfig:
    kind, hidden = parse_candidate(spec)
    return ModelConfig(kind=kind, hidden=hidden)


def _site_values(result: SimulationResult, metric: str, skip: set[str]) -> list[float]:
    out = []
    for s in result.sites:
        if s.site in skip:
            continue
        m = s.personalised or s.global_
        value = None if m is None else m.as_dict().get(metric)
        if value is not None:
            out.append(float(value))
    return out


def _at_chance(ba: list[float], auc: list[float], n_classes: int) -> bool:
    """The candidate's mean validation BA and mean AUC are both within ``CHANCE_MARGIN`` of
    chance (1/K and 0.5) over the sites that have both classes in their validation rows."""
    if not ba or not auc:
        return False
    return bool(
        np.mean(ba) <= 1.0 / n_classes + CHANCE_MARGIN and np.mean(auc) <= 0.5 + CHANCE_MARGIN
    )


def select_model(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    run: CandidateRun,
) -> tuple[SimulationConfig, dict[str, Any] | None]:
    """(the run's config with the chosen model, the ``model_selection`` summary entry).

    Without candidates: ``config`` unchanged and None.
    """
    if not config.model.candidates:
        return config, None
    check_model_selection(config)
    view = validation_dataset(dataset)
    # A site whose validation rows hold one class (e.g. heart's Switzerland, whose training
    # rows can all be positive) has no balanced accuracy to compare models by: its BA would be
    # the recall of that class, which rewards predicting it everywhere. It is left out of the
    # score, and the summary and the log say so.
    one_class = {s.name for s in view.sites if np.unique(s.y_test).size < 2}
    for name in sorted(one_class):
        log.warning(
            "model selection: site %s is left out of the score (its validation rows hold one "
            "class)",
            name,
        )
    rows: list[dict[str, Any]] = []
    for spec in config.model.candidates:
        candidate = dataclasses.replace(
            config, model=candidate_model(spec), evaluate_every=0, finetune_rounds=1
        )
        result = run(candidate, view, out_dir / SELECTION_DIR / spec.replace(":", "-"))
        ba = _site_values(result, "balanced_accuracy", one_class)
        auc = _site_values(result, "roc_auc", one_class)
        rows.append(
            {
                "candidate": spec,
                "mean_validation_balanced_accuracy": float(np.mean(ba)) if ba else None,
                "worst_site_validation_balanced_accuracy": min(ba) if ba else None,
                "mean_validation_roc_auc": float(np.mean(auc)) if auc else None,
                "at_chance": _at_chance(ba, auc, dataset.n_classes),
            }
        )
        log.info("model selection: %s", rows[-1])

    def key(i: int) -> tuple[float, float, int]:
        r = rows[i]
        ba = r["mean_validation_balanced_accuracy"]
        auc = r["mean_validation_roc_auc"]
        return (-1.0 if ba is None else ba, -1.0 if auc is None else auc, -i)

    best = max(range(len(rows)), key=key)
    chosen = config.model.candidates[best]
    warnings = []
    if all(r["mean_validation_balanced_accuracy"] is None for r in rows):
        warnings.append(
            "no site has validation rows of both classes: the first candidate "
            f"{chosen!r} is kept without a comparison"
        )
    warnings += [
        f"model candidate {r['candidate']!r} is no better than chance on the validation rows "
        f"(mean balanced accuracy {r['mean_validation_balanced_accuracy']:.3f})"
        for r in rows
        if r["at_chance"]
    ]
    if all(r["at_chance"] for r in rows):
        warnings.append(
            "every model candidate is at chance on validation: none fits the task (add a "
            "larger MLP to [model] candidates), or training diverged"
        )
    for warning in warnings:
        log.warning("%s", warning)
    log.info("model selection: chose %s on validation", chosen)
    model = dataclasses.replace(candidate_model(chosen), candidates=())
    entry = {
        "chosen": chosen,
        "rule": "highest mean personalised validation balanced accuracy over the training "
        "sites (ties: mean validation AUC, then list order)",
        "validation": "each training site's training rows split 80/20 (stratified, fixed "
        "seed); test rows never read",
        "candidates": rows,
        "sites_left_out": {name: "validation rows hold one class" for name in sorted(one_class)},
        "warnings": warnings,
        "outputs": str(out_dir / SELECTION_DIR),
    }
    return dataclasses.replace(config, model=model), entry
