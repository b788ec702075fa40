"""A site's own records (final result and per-round reports) as JSON, for the grpc simulation.

In ``simulate --transport grpc`` each site process writes what it would keep
locally in a deployment; the driver reads the files to produce the same
``summary.json``/``metrics.csv`` as the in-process engine. Data only: JSON
with a closed set of fields, enums as their values.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from fedmap_secure.data.types import Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.dp_personalisation import PersonalisationRecord
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.fedmap.site import Phase, SiteReport
from fedmap_secure.fedmap.solve_choice import SolveChoice
from fedmap_secure.fedmap.threshold import ThresholdChoice
from fedmap_secure.runtime.results import SiteResult
from fedmap_secure.training.interface import LocalTrainingResult


def _metrics(m: EvalMetrics | None) -> dict[str, Any] | None:
    return None if m is None else dataclasses.asdict(m)


def _metrics_from(raw: Any) -> EvalMetrics | None:
    return None if raw is None else EvalMetrics(**raw)


def _training(t: LocalTrainingResult | None) -> dict[str, Any] | None:
    """The fields every trainer reports (a DP trainer's result extends them)."""
    if t is None:
        return None
    return {f.name: getattr(t, f.name) for f in dataclasses.fields(LocalTrainingResult)}


def write_records(path: Path, result: SiteResult, reports: list[SiteReport]) -> None:
    document = {
        "result": {
            "site": result.site,
            "tier": result.tier.value,
            "n_train": result.n_train,
            "n_test": result.n_test,
            "personalised": _metrics(result.personalised),
            "global": _metrics(result.global_),
            "threshold": None if result.threshold is None else result.threshold.as_dict(),
            "dp_personalisation": (
                None if result.dp_personalisation is None else result.dp_personalisation.as_dict()
            ),
            "personalisation": (
                None if result.personalisation is None else result.personalisation.as_dict()
            ),
        },
        "reports": [
            {
                "site": r.site,
                "tier": r.tier.value,
                "round_index": r.round_index,
                "phase": r.phase.value,
                "training": _training(r.training),
                "omega": r.omega,
                "prior_value": r.prior_value,
                "clipped_coordinates": r.clipped_coordinates,
                "personalised": _metrics(r.personalised),
                "global": _metrics(r.global_),
            }
            for r in reports
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_records(path: Path) -> tuple[SiteResult, list[SiteReport]]:
    """The records a site process wrote; ``ConfigError`` names the file if unusable."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        r = document["result"]
        result = SiteResult(
            site=r["site"],
            tier=Tier(r["tier"]),
            n_train=r["n_train"],
            n_test=r["n_test"],
            personalised=_metrics_from(r["personalised"]),
            global_=_metrics_from(r["global"]),
            threshold=None if r.get("threshold") is None else ThresholdChoice(**r["threshold"]),
            dp_personalisation=(
                None
                if r.get("dp_personalisation") is None
                else PersonalisationRecord(**r["dp_personalisation"])
            ),
            personalisation=(
                None
                if r.get("personalisation") is None
                else SolveChoice.from_dict(r["personalisation"])
            ),
        )
        reports = [
            SiteReport(
                site=p["site"],
                tier=Tier(p["tier"]),
                round_index=p["round_index"],
                phase=Phase(p["phase"]),
                training=None if p["training"] is None else LocalTrainingResult(**p["training"]),
                omega=p["omega"],
                prior_value=p["prior_value"],
                clipped_coordinates=p["clipped_coordinates"],
                personalised=_metrics_from(p["personalised"]),
                global_=_metrics_from(p["global"]),
            )
            for p in document["reports"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"site records {path} are unusable: {exc}") from None
    return result, reports
