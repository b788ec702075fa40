"""Run one simulation end to end: progress bar, outputs on disk, console table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedmap_secure.aggregation import Aggregator
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.experiments.pooled import run_pooled
from fedmap_secure.experiments.report import site_table, summary_dict, write_outputs
from fedmap_secure.experiments.simulation import (
    ProgressFn,
    ScoreReleaseFactory,
    TrainerFactory,
    run_simulation,
)


@contextmanager
def progress_bar(console: Console, description: str) -> Iterator[ProgressFn]:
    """A rich progress bar driven by the engine's ``progress(phase, done, total)`` calls."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(phase: str, done: int, total: int) -> None:
            bar.update(task, description=f"{description}: {phase}", completed=done, total=total)

        yield update


def simulate_to_dir(
    *,
    config: SimulationConfig,
    dataset: FederatedDataset,
    aggregator: Aggregator,
    trainer_factory: TrainerFactory,
    out_dir: Path,
    console: Console,
    pooled: bool = False,
    differential_privacy: dict[str, Any] | None = None,
    score_release_factory: ScoreReleaseFactory | None = None,
) -> dict[str, Any]:
    """Run, write ``out_dir``/summary.json and metrics.csv, print the table; returns the summary."""
    label = "pooled" if pooled else config.method.value
    with progress_bar(console, f"{label} on {dataset.name}") as progress:
        if pooled:
            result = run_pooled(config, dataset, trainer_factory, progress)
        else:
            result = run_simulation(
                config, dataset, aggregator, trainer_factory, progress, score_release_factory
            )
    privacy = {
        "secure_aggregation": None if pooled else aggregator.describe(),
        "differential_privacy": differential_privacy,
    }
    summary = summary_dict(result, privacy=privacy)
    write_outputs(out_dir, result, summary)
    console.print(site_table(result))
    console.print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'metrics.csv'}")
    return summary
