from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pytest

from fedmap_secure.aggregation import AggregateResult, FloatVector, PlainSum, VectorLayout
from fedmap_secure.config.schema import Method, PriorConfig, PriorForm, SimulationConfig
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.pooled import run_pooled
from fedmap_secure.fedmap.site import Phase
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.runtime.results import SimulationResult
from fedmap_secure.training.interface import LocalTrainer, LocalTrainingConfig
from fedmap_secure.training.local import AdamMapTrainer
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401


class RecordingSum:
    """A real PlainSum that also records what it was asked to aggregate."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, VectorLayout, frozenset[str], bytes]] = []
        self._inner = PlainSum()

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        self.calls.append((round_index, layout, frozenset(inputs), context))
        return self._inner.aggregate(
            round_index=round_index, layout=layout, inputs=inputs, context=context
        )

    def describe(self) -> dict[str, object]:
        return self._inner.describe()


def _trainer(site: SiteData, cfg: LocalTrainingConfig) -> LocalTrainer:
    return AdamMapTrainer(cfg)


def _config(method: Method, **kw: object) -> SimulationConfig:
    base = SimulationConfig(method=method, rounds=2, finetune_rounds=1)
    base = replace(base, training=replace(base.training, epochs=2, learning_rate=0.05))
    return replace(base, **kw)  # type: ignore[arg-type]


def _run(method: Method, agg: RecordingSum | None = None, **kw: object) -> SimulationResult:
    return run_simulation(_config(method, **kw), tiny_dataset(), agg or RecordingSum(), _trainer)


@pytest.mark.parametrize("method", list(Method))
def test_each_method_runs_end_to_end_with_tiers(method: Method) -> None:
    agg = RecordingSum()
    result = _run(method, agg)
    by_name = {s.site: s for s in result.sites}
    assert set(by_name) == {"a", "b", "c", "d", "e"}
    for name in ("a", "b", "c", "d"):
        assert by_name[name].personalised is not None
    assert by_name["e"].tier is Tier.UNSEEN
    assert by_name["e"].personalised is None
    if method is Method.LOCAL:
        assert agg.calls == [], "the local method never aggregates"
        assert all(s.global_ is None for s in result.sites)
        assert result.final_state is None
    else:
        assert [c[0] for c in agg.calls] == [0, 1]
        assert all(c[2] == {"a", "b", "c"} for c in agg.calls), (
            "only training-tier sites contribute"
        )
        assert all(s.global_ is not None for s in result.sites)
        assert len({c[3] for c in agg.calls}) == 2, "the round context changes with the state"
    assert result.n_psi == (0 if method is not Method.FEDMAP else result.n_psi)
    assert result.n_theta == 10
    phases = {(r.site, r.phase) for r in result.reports}
    assert ("d", Phase.FINETUNE) in phases
    assert ("a", Phase.FINETUNE) not in phases


def test_fedmap_updates_psi_and_reports_scores() -> None:
    result = _run(Method.FEDMAP)
    assert result.final_state is not None
    assert result.final_state.psi is not None
    assert result.n_psi == result.final_state.psi.size > 0
    train_reports = [r for r in result.reports if r.phase is Phase.TRAIN and r.training is not None]
    assert train_reports
    assert all(r.omega is not None and 1e-3 <= r.omega <= 1.0 for r in train_reports)
    assert len(result.server_logs) == 2
    assert result.server_logs[0].weighted_mean_prior is not None


def test_same_seed_same_result_and_different_seed_differs() -> None:
    a, b = _run(Method.FEDMAP), _run(Method.FEDMAP)
    c = _run(Method.FEDMAP, seed=1)
    assert a.final_state is not None
    assert b.final_state is not None
    assert c.final_state is not None
    np.testing.assert_array_equal(a.final_state.gamma, b.final_state.gamma)
    assert a.final_state.psi is not None
    np.testing.assert_array_equal(a.final_state.psi, b.final_state.psi)
    assert not np.array_equal(a.final_state.gamma, c.final_state.gamma)


def test_coordinatewise_prior_runs_and_is_smaller() -> None:
    per_tensor = _run(Method.FEDMAP)
    coord = _run(Method.FEDMAP, prior=PriorConfig(form=PriorForm.COORDINATEWISE))
    assert 0 < coord.n_psi < per_tensor.n_psi


def test_training_learns_on_the_tiny_dataset() -> None:
    result = run_simulation(
        replace(_config(Method.FEDAVG), rounds=5), tiny_dataset(), PlainSum(), _trainer
    )
    assert result.mean_global_accuracy is not None
    assert result.mean_global_accuracy > 0.7


def test_metrics_every_round_or_final_only() -> None:
    every = _run(Method.FEDAVG)
    final_only = _run(Method.FEDAVG, evaluate_every=0)
    assert any(r.personalised is not None for r in every.reports)
    assert all(r.personalised is None and r.global_ is None for r in final_only.reports)
    assert every.sites == final_only.sites


def test_dataset_without_training_sites_is_refused() -> None:
    ds = tiny_dataset()
    only_unseen = replace(ds, sites=tuple(s for s in ds.sites if s.tier is Tier.UNSEEN))
    with pytest.raises(ConfigError, match="no training-tier site"):
        run_simulation(_config(Method.FEDMAP), only_unseen, PlainSum(), _trainer)


def test_pooled_reference_evaluates_every_site() -> None:
    result = run_pooled(_config(Method.FEDAVG), tiny_dataset(), _trainer)
    assert result.method == "pooled"
    assert all(s.personalised == s.global_ and s.global_ is not None for s in result.sites)


class ReversedSum:
    """Another Aggregator: sums in reverse site order with one numpy reduction."""

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        stacked = np.stack([inputs[k] for k in sorted(inputs, reverse=True)])
        return AggregateResult(
            sums=layout.unflatten(stacked.sum(axis=0)), contributors=frozenset(inputs)
        )

    def describe(self) -> dict[str, object]:
        return {"protocol": "reversed plain sum (test)"}


def test_engine_result_does_not_depend_on_how_sums_are_computed() -> None:
    cfg = _config(Method.FEDMAP)
    a = run_simulation(cfg, tiny_dataset(), PlainSum(), _trainer)
    b = run_simulation(cfg, tiny_dataset(), ReversedSum(), _trainer)
    assert a.final_state is not None
    assert b.final_state is not None
    np.testing.assert_allclose(a.final_state.gamma, b.final_state.gamma, rtol=1e-5, atol=1e-7)
    assert [s.personalised for s in a.sites] == [s.personalised for s in b.sites]


def test_trainers_are_made_only_for_sites_with_training_data() -> None:
    made: list[str] = []

    def factory(site: SiteData, cfg: LocalTrainingConfig) -> LocalTrainer:
        made.append(site.name)
        return AdamMapTrainer(cfg)

    run_simulation(_config(Method.FEDAVG), tiny_dataset(), PlainSum(), factory)
    assert made == ["a", "b", "c", "d"]
