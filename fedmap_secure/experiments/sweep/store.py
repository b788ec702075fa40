"""The on-disk layout of a sweep (data only: JSON and CSV, never pickle).

    DIR/runs/<run id>/spec.json      the RunSpec (always written first)
    DIR/runs/<run id>/summary.json   present iff the run finished
    DIR/runs/<run id>/metrics.csv    per-round metrics of the engine
    DIR/runs/<run id>/error.json     present iff the last attempt failed
    DIR/runs/.staging/               runs in progress (moved into place when done)

A finished run appears atomically: it is written under ``.staging`` and
renamed into ``runs/`` only after every file is complete, so an interrupted
sweep never leaves a half-written run that a resume would mistake for done.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep.spec import RunSpec

SPEC_FILE = "spec.json"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
ERROR_FILE = "error.json"
STAGING = ".staging"


def runs_dir(out: Path) -> Path:
    return out / "runs"


def run_dir(out: Path, spec: RunSpec) -> Path:
    return runs_dir(out) / spec.run_id


def is_finished(out: Path, spec: RunSpec) -> bool:
    return (run_dir(out, spec) / SUMMARY_FILE).is_file()


def write_json(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and an atomic rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc}") from None


def clear_staging(out: Path) -> None:
    """Remove leftovers of interrupted attempts and make sure DIR/runs exists."""
    shutil.rmtree(runs_dir(out) / STAGING, ignore_errors=True)
    runs_dir(out).mkdir(parents=True, exist_ok=True)


def staging_dir(out: Path, spec: RunSpec) -> Path:
    """A fresh private directory for one attempt (pid-suffixed: safe across workers)."""
    path = runs_dir(out) / STAGING / f"{spec.run_id}.{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    write_json(path / SPEC_FILE, spec.to_dict())
    return path


def publish(out: Path, spec: RunSpec, staged: Path) -> Path:
    """Move a completed attempt into place, replacing an earlier failed attempt."""
    final = run_dir(out, spec)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staged, final)
    return final


def record_failure(out: Path, spec: RunSpec, error: dict[str, str], staged: Path | None) -> None:
    """Keep DIR/runs/<id>/spec.json and error.json (no summary: a resume retries it)."""
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)
    final = run_dir(out, spec)
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    write_json(final / SPEC_FILE, spec.to_dict())
    write_json(final / ERROR_FILE, error)


@dataclass(frozen=True, kw_only=True)
class StoredRun:
    """One run directory as found on disk."""

    run_id: str
    spec: RunSpec
    summary: dict[str, Any] | None
    error: dict[str, Any] | None


def load_runs(out: Path) -> list[StoredRun]:
    """Every run directory under DIR/runs (staging excluded), sorted by id."""
    root = runs_dir(out)
    if not root.is_dir():
        raise ConfigError(f"{str(out)!r} holds no sweep results (no runs/ directory)")
    found = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and p.name != STAGING):
        if not (path / SPEC_FILE).is_file():
            continue
        summary = path / SUMMARY_FILE
        error = path / ERROR_FILE
        found.append(
            StoredRun(
                run_id=path.name,
                spec=RunSpec.from_dict(read_json(path / SPEC_FILE)),
                summary=read_json(summary) if summary.is_file() else None,
                error=read_json(error) if error.is_file() else None,
            )
        )
    return found
