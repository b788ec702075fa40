"""Model selection on validation (``[model] candidates``) on a task the default model cannot fit.

Four sites of 200 training / 100 test rows, two features, classes separated radially
(|x| > 1.18: about half each); FedMAP, 20 rounds, no DP, plain sum. Selection runs
every candidate on the validation view (the training rows split 80/20) and the
chosen model is then run on the test rows; the logistic model alone is run for
comparison. Prints the candidates' validation figures, the choice, the warnings and
the test mean balanced accuracy of both.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_model_selection_radial.py
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.experiments.model_selection import select_model
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.runtime.results import SimulationResult
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer

CONFIG = """
[simulation]
rounds = 20
[model]
candidates = ["logistic", "mlp:16", "mlp:32"]
[privacy]
enabled = false
"""


def radial(seed: int = 0, sites: int = 4, n: int = 200) -> FederatedDataset:
    rng = np.random.default_rng(seed)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(m, 2)).astype(np.float32)
        return x, (np.linalg.norm(x, axis=1) > 1.18).astype(np.int64)

    out = []
    for i in range(sites):
        (xa, ya), (xb, yb) = draw(n), draw(n // 2)
        out.append(
            SiteData(name=f"s{i}", tier=Tier.TRAIN, x_train=xa, y_train=ya, x_test=xb, y_test=yb)
        )
    return FederatedDataset(
        name="radial", feature_names=("x0", "x1"), n_classes=2, sites=tuple(out)
    )


def _trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    return AdamMapTrainer(training)


def _run(config: SimulationConfig, dataset: FederatedDataset, where: Path) -> SimulationResult:
    return run_simulation(config, dataset, PlainSum(), _trainer)


def _mean_ba(result: SimulationResult) -> float:
    return float(
        np.mean([s.personalised.balanced_accuracy for s in result.sites if s.personalised])
    )


def main() -> None:
    torch.set_num_threads(1)
    config, dataset = parse_config(CONFIG), radial()
    with tempfile.TemporaryDirectory() as tmp:
        chosen, entry = select_model(config, dataset, Path(tmp), _run)
    assert entry is not None
    for row in entry["candidates"]:
        print(row)
    print("chosen:", entry["chosen"], "| warnings:", entry["warnings"])
    logistic = dataclasses.replace(config, model=dataclasses.replace(config.model, candidates=()))
    print(f"test mean BA, chosen {entry['chosen']}: {_mean_ba(_run(chosen, dataset, Path()))}")
    print(f"test mean BA, logistic: {_mean_ba(_run(logistic, dataset, Path()))}")


if __name__ == "__main__":
    main()
