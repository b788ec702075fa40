"""The server runtime over the in-process channel: progress lines, drops and rejoins by name,
an unchanged model when nothing is aggregated."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.data.types import SiteData
from fedmap_secure.errors import BudgetExceededError
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig, LocalTrainingResult
from fedmap_secure.training.local import AdamMapTrainer
from tests.synthetic import tiny_dataset


class _SkipsRound:
    """Site b's trainer: its budget 'runs out' in round 1 only (it declines, then returns)."""

    def __init__(self, training: LocalTrainingConfig) -> None:
        self._inner = AdamMapTrainer(training)
        self._calls = 0

    def train(self, *args: object, **kwargs: object) -> LocalTrainingResult:
        self._calls += 1
        if self._calls == 2:
            raise BudgetExceededError("round budget refused")
        return self._inner.train(*args, **kwargs)  # type: ignore[arg-type]


def _trainer(site: SiteData, training: LocalTrainingConfig) -> LocalTrainer:
    return _SkipsRound(training) if site.name == "b" else AdamMapTrainer(training)


def _config(method: Method = Method.FEDAVG, rounds: int = 3) -> SimulationConfig:
    base = SimulationConfig(method=method, rounds=rounds, seed=1)
    return replace(base, training=replace(base.training, epochs=1))


def test_server_logs_each_round_and_a_drop_and_rejoin_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.set_num_threads(1)
    data = tiny_dataset(finetune=False, unseen=False)
    with caplog.at_level(logging.INFO, logger="fedmap_secure.runtime.server"):
        result = run_simulation(_config(), data, PlainSum(), _trainer)
    lines = [r.getMessage() for r in caplog.records]
    assert "round 1/3: 3 contributor(s)" in lines
    assert "round 2/3: site b dropped" in lines
    assert "round 2/3: 2 contributor(s), dropped: b" in lines
    assert "round 3/3: site b rejoined" in lines
    assert [log.contributors for log in result.server_logs] == [3, 2, 3]
    declined = [(r.site, r.round_index) for r in result.reports if r.declined]
    assert declined == [("b", 1)]


def test_local_method_aggregates_nothing_and_keeps_gamma(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tiny_dataset(finetune=False, unseen=False)
    with caplog.at_level(logging.INFO, logger="fedmap_secure.runtime.server"):
        result = run_simulation(_config(Method.LOCAL, rounds=2), data, PlainSum())
    assert result.server_logs == ()
    assert result.final_state is None
    assert "round 2/2: nothing aggregated; the model is unchanged" in [
        r.getMessage() for r in caplog.records
    ]
    assert all(s.personalised is not None for s in result.sites)
    assert np.isfinite(result.mean_personalised_accuracy or 0.0)
