"""Run one simulation end to end: progress bar, outputs on disk, console table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedmap_secure.aggregation import Aggregator
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData
from fedmap_secure.experiments.pipeline import run_private_simulation
from fedmap_secure.experiments.pooled import run_pooled
from fedmap_secure.experiments.report import site_table, summary_dict, write_outputs
from fedmap_secure.runtime.results import ProgressFn, SimulationResult, TrainerFactory
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig


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
    out_dir: Path,
    console: Console,
    pooled: bool = False,
    aggregator: Aggregator | None = None,
    trainer_factory: TrainerFactory | None = None,
    site_state: Path | None = None,
    workers: int | str = 1,
    site_batching: bool = True,
) -> dict[str, Any]:
    """Run, write ``out_dir``/summary.json and metrics.csv, print the table; returns the summary.

    A federated run goes through ``run_private_simulation`` (SecAgg and DP as
    configured); ``pooled`` is the centralised, non-private reference.
    """
    label = "pooled" if pooled else config.method.value
    epsilon: Mapping[str, float] | None = None
    selection: dict[str, Any] | None = None
    if config.model.candidates:
        config, selection = _select_model(
            config, dataset, out_dir, console, pooled=pooled, trainer_factory=trainer_factory
        )
    if not pooled and config.privacy.enabled:
        console.print("each training site calibrates its DP noise from its own budget ...")
    with progress_bar(console, f"{label} on {dataset.name}") as progress:
        if pooled:
            result = run_pooled(config, dataset, trainer_factory or _plain, progress)
            privacy: dict[str, Any] = {
                "secure_aggregation": None,
                "differential_privacy": None,
                "metrics_released": False,
            }
        else:
            run = run_private_simulation(
                config,
                dataset,
                out_dir,
                progress=progress,
                aggregator=aggregator,
                trainer_factory=trainer_factory,
                site_state=site_state,
                workers=workers,
                site_batching=site_batching,
            )
            result, privacy, epsilon = run.result, run.privacy, run.epsilon_spent
    summary = summary_dict(
        result, privacy=privacy, epsilon_spent=epsilon, n_classes=dataset.n_classes
    )
    if selection is not None:
        summary["model_selection"] = selection
    write_outputs(out_dir, result, summary)
    console.print(site_table(result, epsilon_spent=epsilon))
    for warning in summary["warnings"]:
        console.print(f"[yellow]warning: {warning}")
    _print_privacy(console, privacy)
    console.print(f"wrote {out_dir / 'summary.json'} and {out_dir / 'metrics.csv'}")
    return summary


def _select_model(
    config: SimulationConfig,
    dataset: FederatedDataset,
    out_dir: Path,
    console: Console,
    *,
    pooled: bool,
    trainer_factory: TrainerFactory | None,
) -> tuple[SimulationConfig, dict[str, Any] | None]:
    """``[model] candidates``: one run per candidate on validation rows, then the choice."""
    from fedmap_secure.experiments.model_selection import select_model

    def run(candidate: SimulationConfig, view: FederatedDataset, where: Path) -> SimulationResult:
        if pooled:
            return run_pooled(candidate, view, trainer_factory or _plain)
        return run_private_simulation(
            candidate, view, where, trainer_factory=trainer_factory
        ).result

    console.print(f"model selection on validation rows among {list(config.model.candidates)} ...")
    config, selection = select_model(config, dataset, out_dir, run)
    if selection is not None:
        for row in selection["candidates"]:
            mean = row["mean_validation_balanced_accuracy"]
            worst = row["worst_site_validation_balanced_accuracy"]
            console.print(
                f"  {row['candidate']}: validation mean BA "
                + ("-" if mean is None else f"{mean:.3f}, worst site {worst:.3f}")
            )
        console.print(f"model selection: chose {selection['chosen']}")
        for warning in selection["warnings"]:
            console.print(f"[yellow]warning: {warning}")
    return config, selection


def _print_privacy(console: Console, privacy: Mapping[str, Any]) -> None:
    secure = privacy.get("secure_aggregation")
    if secure:
        console.print(
            f"aggregation: {secure['protocol']} n={secure['n']} k={secure['k']} t={secure['t']} "
            f"c_max={secure.get('max_colluding_sites')} colluding sites"
        )
        clipped = secure.get("clipped_coordinates") or {}
        if any(clipped.values()):
            console.print(f"[yellow]clipped coordinates (declared bounds too small?): {clipped}")
    dp = privacy.get("differential_privacy")
    if dp:
        declined = {s: d["declined_rounds"] for s, d in dp["sites"].items() if d["declined_rounds"]}
        console.print(
            f"DP: per-site budget epsilon {dp['target_epsilon']:g}, {dp['accountant']['name']}, "
            f"noise {dp['noise_source']} (reproducible: {dp['reproducible']}); "
            f"({dp['unit']})"
        )
        console.print(f"DP budget: {dp.get('budget_scope', 'per run')}")
        if not dp.get("dp_guarantee", True):
            console.print(f"[bold red]DP: {dp['guarantee']}")
        if declined:
            console.print(f"[yellow]declined rounds (budget): {declined}")
    else:
        console.print("DP: off (--no-dp)" if secure else "DP: not applicable")


def _plain(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    from fedmap_secure.training.local import AdamMapTrainer

    return AdamMapTrainer(training)
