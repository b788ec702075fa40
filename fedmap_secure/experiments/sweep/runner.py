"""Run a list of specs: skip finished runs, record failures, show progress with an ETA.

``execute_one`` is the unit of work every backend runs in a worker. Only
plain strings cross the process boundary (the spec as JSON, the output
directory, the run function as ``"module:function"``), so workers rebuild
everything from data and nothing of ours is ever pickled.
"""

from __future__ import annotations

import enum
import importlib
import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.sweep import store
from fedmap_secure.experiments.sweep.spec import RunSpec

RunFn = Callable[[RunSpec, Path], dict[str, Any]]
"""run_fn(spec, out_dir) runs one experiment, writes out_dir/summary.json and returns it."""

DEFAULT_RUN_FN = "fedmap_secure.experiments.sweep.adapter:run_one"


class Status(enum.Enum):
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, kw_only=True)
class Outcome:
    run_id: str
    status: Status
    seconds: float
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "status": self.status.value,
                "seconds": self.seconds,
                "error": self.error,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        d = json.loads(text)
        return cls(
            run_id=d["run_id"], status=Status(d["status"]), seconds=d["seconds"], error=d["error"]
        )


def resolve_run_fn(reference: str) -> RunFn:
    """``"package.module:function"`` -> the function."""
    module, sep, name = reference.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"run function reference {reference!r} is not 'module:function'")
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise ConfigError(f"run function module {module!r} cannot be imported: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"{reference!r} is not a callable")
    run_fn: RunFn = fn
    return run_fn


def single_thread() -> None:
    """One torch intra-op thread per worker (tiny models; workers share the cores)."""
    import torch

    torch.set_num_threads(1)


def execute_one(spec_json: str, out: str, run_fn_ref: str) -> str:
    """Run one spec in this process; never raises for a failing experiment.

    Success: the staged run is published (summary.json in place). Failure: its
    message and traceback text go to DIR/runs/<id>/error.json.
    """
    spec = RunSpec.from_dict(json.loads(spec_json))
    out_path = Path(out)
    start = time.perf_counter()
    staged = None
    try:
        staged = store.staging_dir(out_path, spec)
        resolve_run_fn(run_fn_ref)(spec, staged)
        if not (staged / store.SUMMARY_FILE).is_file():
            raise ConfigError(f"run function {run_fn_ref!r} wrote no {store.SUMMARY_FILE}")
        store.publish(out_path, spec, staged)
    except Exception as exc:  # a failing run is recorded; the sweep goes on
        message = f"{type(exc).__name__}: {exc}"
        error = {"run_id": spec.run_id, "message": message, "traceback": traceback.format_exc()}
        store.record_failure(out_path, spec, error, staged)
        return Outcome(
            run_id=spec.run_id,
            status=Status.FAILED,
            seconds=time.perf_counter() - start,
            error=message,
        ).to_json()
    return Outcome(
        run_id=spec.run_id, status=Status.DONE, seconds=time.perf_counter() - start
    ).to_json()


class Backend(Protocol):
    """Runs ``execute_one`` for each task; calls ``done(outcome_json)`` as each one finishes."""

    def run(
        self, tasks: Sequence[str], out: str, run_fn_ref: str, done: Callable[[str], None]
    ) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SweepReport:
    total: int
    skipped: int
    outcomes: tuple[Outcome, ...]

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.status is Status.FAILED)


def pending(specs: Sequence[RunSpec], out: Path) -> list[RunSpec]:
    """The specs without a finished result (failed runs are retried)."""
    return [s for s in specs if not store.is_finished(out, s)]


def run_sweep(
    specs: Sequence[RunSpec],
    out: Path,
    *,
    backend: Backend,
    run_fn_ref: str = DEFAULT_RUN_FN,
    console: Console | None = None,
) -> SweepReport:
    """Run every unfinished spec on ``backend`` with an overall progress bar and ETA.

    One sweep process per ``out`` at a time: leftovers of interrupted attempts
    (``runs/.staging``) are removed first.
    """
    resolve_run_fn(run_fn_ref)  # fail fast on a bad reference, before any worker starts
    todo = pending(specs, out)
    store.clear_staging(out)
    outcomes: list[Outcome] = []
    with Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
    ) as bar:
        task = bar.add_task("sweep", total=len(todo), failed=0)

        def done(outcome_json: str) -> None:
            outcome = Outcome.from_json(outcome_json)
            outcomes.append(outcome)
            failed = sum(o.status is Status.FAILED for o in outcomes)
            bar.update(task, advance=1, failed=failed)

        tasks = [json.dumps(s.to_dict()) for s in todo]
        backend.run(tasks, str(out), run_fn_ref, done)
    return SweepReport(total=len(specs), skipped=len(specs) - len(todo), outcomes=tuple(outcomes))
