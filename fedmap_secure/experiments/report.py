"""Outputs of a run: summary.json, metrics.csv and the per-site console table."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table

from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.process_clock import process_wall_seconds
from fedmap_secure.runtime.results import SimulationResult

METRICS_COLUMNS = (
    "round",
    "phase",
    "site",
    "tier",
    "epochs_run",
    "steps",
    "train_loss",
    "omega",
    "prior_value",
    "clipped_coordinates",
    "personalised_balanced_accuracy",
    "personalised_roc_auc",
    "personalised_accuracy",
    "global_balanced_accuracy",
    "global_roc_auc",
    "global_accuracy",
    "declined",
)


HEADLINE_METRICS = ("balanced_accuracy", "roc_auc", "accuracy")
"""Metrics of the headline keys, in order of importance: balanced accuracy leads (accuracy
rewards predicting the majority class at a skewed site), ROC AUC is threshold-free."""


def site_metric_values(result: SimulationResult, model: str, metric: str) -> list[float]:
    """``metric`` of every site's ``model`` ("personalised" or "global_") where it is defined."""
    values = []
    for s in result.sites:
        m: EvalMetrics | None = getattr(s, model)
        v = None if m is None else m.as_dict().get(metric)
        if v is not None and math.isfinite(v):
            values.append(float(v))
    return values


def headline(result: SimulationResult) -> dict[str, float | None]:
    """Mean and worst site of each headline metric, personalised and global models.

    Keys ``mean_<model>_<metric>`` and ``worst_site_<model>_<metric>``; None when
    no site has the value (e.g. AUC when every test set has one class, or the
    global model of ``local``). Means are unweighted over sites (each hospital counts once).
    """
    out: dict[str, float | None] = {}
    for model, attr in (("personalised", "personalised"), ("global", "global_")):
        for metric in HEADLINE_METRICS:
            values = site_metric_values(result, attr, metric)
            out[f"mean_{model}_{metric}"] = sum(values) / len(values) if values else None
            out[f"worst_site_{model}_{metric}"] = min(values) if values else None
    return out


CHANCE_MARGIN = 0.05
"""A model within this margin of chance balanced accuracy (1/K) is reported as at chance."""


def chance_warnings(result: SimulationResult, *, n_classes: int) -> list[str]:
    """One line per site whose trained model is no better than chance, and one for the run
    when every site's is (the model family likely does not fit the task).

    Judged on each site's own held-out test rows (the metric the site computes anyway;
    nothing extra is read or released), at sites whose test rows hold more than one class:
    balanced accuracy <= 1/K + ``CHANCE_MARGIN`` and ROC AUC <= 0.5 + ``CHANCE_MARGIN``
    (a threshold-free check, so a well-ranked but badly thresholded model is not flagged).
    """
    chance = 1.0 / n_classes
    flagged, judged = [], 0
    for s in result.sites:
        m = s.personalised or s.global_
        if m is None or m.roc_auc is None:
            continue
        judged += 1
        if m.balanced_accuracy <= chance + CHANCE_MARGIN and m.roc_auc <= 0.5 + CHANCE_MARGIN:
            which = "personalised" if s.personalised else "global"
            flagged.append(
                f"site {s.site!r}: the {which} model is no better than chance on its test rows "
                f"(balanced accuracy {m.balanced_accuracy:.3f}, AUC {m.roc_auc:.3f}; chance "
                f"{chance:.3f})"
            )
    if judged and len(flagged) == judged:
        flagged.append(
            "every site's model is at chance: the model may not fit the task (a nonlinear "
            'decision boundary needs [model] kind = "mlp"), or training diverged'
        )
    return flagged


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _metrics(m: EvalMetrics | None) -> dict[str, float | None] | None:
    return m.as_dict() if m is not None else None


def summary_dict(
    result: SimulationResult,
    *,
    privacy: dict[str, Any],
    epsilon_spent: Mapping[str, float] | None = None,
    n_classes: int | None = None,
) -> dict[str, Any]:
    """The summary.json document (keys fixed by issue 2; headline keys by issue 16).

    ``epsilon_spent`` (per private site, from its ledger) is None when DP is
    off: every site's ``epsilon_spent`` is then null. With DP on, sites that
    release nothing (fine-tune and unseen tiers) spent 0. ``warnings`` lists
    the chance-level checks (``chance_warnings``); null when ``n_classes`` is
    not given (the check needs the number of classes). ``models`` names the
    model files the run wrote (``sites``: name -> personalised sidecar;
    ``global``: the global model's sidecar, or null).
    """
    warnings = None if n_classes is None else chance_warnings(result, n_classes=n_classes)
    return {
        "dataset": result.dataset,
        "method": result.method,
        "rounds": result.rounds,
        "seed": result.seed,
        "privacy": privacy,
        "wall_seconds": result.wall_seconds,
        "process_wall_seconds": process_wall_seconds(),
        "parameters": {"theta": result.n_theta, "psi": result.n_psi},
        "sites": [
            {
                "site": s.site,
                "tier": s.tier.value,
                "n_train": s.n_train,
                "n_test": s.n_test,
                "personalised": _metrics(s.personalised),
                "global": _metrics(s.global_),
                "epsilon_spent": None if epsilon_spent is None else epsilon_spent.get(s.site, 0.0),
                "threshold": None if s.threshold is None else s.threshold.as_dict(),
                "dp_personalisation": (
                    None if s.dp_personalisation is None else s.dp_personalisation.as_dict()
                ),
                "personalisation": (
                    None if s.personalisation is None else s.personalisation.as_dict()
                ),
            }
            for s in result.sites
        ],
        **headline(result),
        "warnings": warnings,
        "models": {
            "sites": {
                name: str(path) for name, path in result.model_files.items() if name != "global"
            },
            "global": (
                str(result.model_files["global"]) if "global" in result.model_files else None
            ),
        },
    }


def metrics_rows(result: SimulationResult) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for r in result.reports:
        row: dict[str, object] = {
            "round": r.round_index,
            "phase": r.phase.value,
            "site": r.site,
            "tier": r.tier.value,
            "epochs_run": r.training.epochs_run if r.training else None,
            "steps": r.training.steps if r.training else None,
            "train_loss": _finite(r.training.final_train_loss) if r.training else None,
            "omega": r.omega,
            "prior_value": r.prior_value,
            "clipped_coordinates": r.clipped_coordinates,
            "declined": int(r.declined),
        }
        for prefix, m in (("personalised", r.personalised), ("global", r.global_)):
            d = m.as_dict() if m is not None else {}
            for key in HEADLINE_METRICS:
                row[f"{prefix}_{key}"] = d.get(key)
        rows.append(row)
    return rows


def write_outputs(out_dir: Path, result: SimulationResult, summary: dict[str, Any]) -> None:
    """Write DIR/summary.json and DIR/metrics.csv (empty cells for missing values)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(summary, indent=2, allow_nan=False)
        (out_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
        with (out_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRICS_COLUMNS)
            writer.writeheader()
            for row in metrics_rows(result):
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    except OSError as exc:
        raise ConfigError(f"cannot write results to {str(out_dir)!r}: {exc.strerror}") from None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def site_table(
    result: SimulationResult, *, epsilon_spent: Mapping[str, float] | None = None
) -> Table:
    """Per-site table led by balanced accuracy, then AUC, accuracy (and epsilon spent under DP)."""
    table = Table(
        title=f"{result.method} on {result.dataset}: {result.rounds} rounds, seed {result.seed}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    table.add_column("site", no_wrap=True)
    table.add_column("tier", no_wrap=True)
    for col in ("train", "test"):
        table.add_column(col, justify="right")
    for prefix in ("P", "G"):
        for name in ("BA", "AUC", "acc"):
            table.add_column(f"{prefix} {name}", justify="right")
    if epsilon_spent is not None:
        table.add_column("eps", justify="right")
    for s in result.sites:
        cells = [s.site, s.tier.value, str(s.n_train), str(s.n_test)]
        for m in (s.personalised, s.global_):
            cells += [
                _fmt(m.balanced_accuracy if m else None),
                _fmt(m.roc_auc if m else None),
                _fmt(m.accuracy if m else None),
            ]
        if epsilon_spent is not None:
            cells.append(f"{epsilon_spent.get(s.site, 0.0):.2f}")
        table.add_row(*cells)
    h = headline(result)
    table.caption = (
        "P = personalised model, G = global model; BA = balanced accuracy (mean recall over "
        "classes; chance = 1/classes), acc = accuracy; AUC '-' = one class in the test data"
        + (
            "; eps = epsilon spent (site ledger, PLD, replace-one adjacency; the RDP "
            "cross-check in summary.json is a looser bound and may exceed the budget).\n"
            if epsilon_spent is not None
            else ".\n"
        )
        + "Metrics are each site's own view (they are not released).\n"
        f"personalised: mean BA {_fmt(h['mean_personalised_balanced_accuracy'])} "
        f"(worst site {_fmt(h['worst_site_personalised_balanced_accuracy'])}), "
        f"mean AUC {_fmt(h['mean_personalised_roc_auc'])} "
        f"(worst {_fmt(h['worst_site_personalised_roc_auc'])}), "
        f"mean acc {_fmt(h['mean_personalised_accuracy'])}\n"
        f"global: mean BA {_fmt(h['mean_global_balanced_accuracy'])} "
        f"(worst site {_fmt(h['worst_site_global_balanced_accuracy'])}), "
        f"mean AUC {_fmt(h['mean_global_roc_auc'])}, "
        f"mean acc {_fmt(h['mean_global_accuracy'])}"
    )
    return table
