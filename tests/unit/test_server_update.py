"""The server update computed from summed contributions equals the reference formulas."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

from fedmap_secure.aggregation import AggregateResult, FloatVector, PlainSum, VectorLayout
from fedmap_secure.config.schema import BoundsConfig, Method, SimulationConfig
from fedmap_secure.errors import AbortedError, LocalProtocolError
from fedmap_secure.fedmap.methods import GlobalState, encode_contribution, make_strategy

N_THETA, N_PSI = 5, 7


@dataclass
class FakeTrainedSite:
    """Plain values standing in for a trained site (the strategy reads only these)."""

    n: int
    theta: FloatVector
    omega: float
    prior_value: float
    grad: FloatVector

    @property
    def n_train(self) -> int:
        return self.n

    def theta_vector(self) -> FloatVector:
        return self.theta

    def gamma_vector(self) -> FloatVector:
        return np.zeros_like(self.theta)

    def score(self) -> tuple[float, float]:
        return self.omega, self.prior_value

    def psi_gradient(self) -> FloatVector:
        return self.grad


def _sites(seed: int = 0) -> list[FakeTrainedSite]:
    rng = np.random.default_rng(seed)
    return [
        FakeTrainedSite(
            n=int(rng.integers(5, 500)),
            theta=rng.normal(0, 2, N_THETA),
            omega=float(rng.uniform(1e-3, 1)),
            prior_value=float(rng.uniform(0, 10)),
            grad=rng.normal(0, 1, N_PSI),
        )
        for _ in range(4)
    ]


def _run(method: Method, sites: list[FakeTrainedSite], state: GlobalState) -> GlobalState:
    strategy = make_strategy(SimulationConfig(method=method))
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    inputs = {
        f"s{i}": encode_contribution(layout, strategy.contribution(s))[0]
        for i, s in enumerate(sites)
    }
    result = PlainSum().aggregate(round_index=0, layout=layout, inputs=inputs, context=b"")
    mask = np.arange(N_PSI) % 2 == 0
    nxt, log = strategy.server_update(state, result, mask)
    assert log.contributors == len(sites)
    return nxt


def _state() -> GlobalState:
    return GlobalState(round_index=3, gamma=np.zeros(N_THETA), psi=np.linspace(-0.01, 0.01, N_PSI))


def test_fedmap_update_equals_reference_formula() -> None:
    sites = _sites()
    state = _state()
    nxt = _run(Method.FEDMAP, sites, state)
    w = np.array([s.omega for s in sites])
    gamma_ref = sum(s.omega * s.theta for s in sites) / w.sum()
    grad_ref = sum(s.omega * s.grad for s in sites) / w.sum()
    lr = SimulationConfig().server.lr_psi
    assert state.psi is not None
    psi_ref = state.psi - lr * grad_ref
    mask = np.arange(N_PSI) % 2 == 0
    psi_ref[mask] = np.maximum(psi_ref[mask], 0.0)
    np.testing.assert_allclose(nxt.gamma, gamma_ref, rtol=1e-12)
    np.testing.assert_allclose(nxt.psi, psi_ref, rtol=1e-12)  # type: ignore[arg-type]
    assert nxt.round_index == 4
    assert (nxt.psi[mask] >= 0).all()  # type: ignore[index]


@pytest.mark.parametrize("method", [Method.FEDAVG, Method.FEDPROX])
def test_fedavg_and_fedprox_update_equal_sample_weighted_mean(method: Method) -> None:
    sites = _sites(1)
    nxt = _run(method, sites, _state())
    n = np.array([s.n for s in sites], dtype=float)
    ref = sum(s.n * s.theta for s in sites) / n.sum()
    np.testing.assert_allclose(nxt.gamma, ref, rtol=1e-12)


@pytest.mark.parametrize("method", [Method.FEDAVG, Method.FEDMAP])
def test_update_invariant_to_site_order(method: Method) -> None:
    sites = _sites(2)
    a = _run(method, sites, _state())
    b = _run(method, list(reversed(sites)), _state())
    np.testing.assert_allclose(a.gamma, b.gamma, rtol=1e-12)


def test_plain_sum_equals_manual_sum() -> None:
    strategy = make_strategy(SimulationConfig(method=Method.FEDMAP))
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    sites = _sites(3)
    vecs = {
        f"s{i}": encode_contribution(layout, strategy.contribution(s))[0]
        for i, s in enumerate(sites)
    }
    via_plain = PlainSum().aggregate(round_index=0, layout=layout, inputs=vecs, context=b"")
    total = np.sum(np.stack(list(vecs.values())), axis=0)
    manual = AggregateResult(sums=layout.unflatten(total), contributors=frozenset(vecs))
    mask = np.zeros(N_PSI, dtype=bool)
    a, _ = strategy.server_update(_state(), via_plain, mask)
    b, _ = strategy.server_update(_state(), manual, mask)
    np.testing.assert_allclose(a.gamma, b.gamma)
    np.testing.assert_allclose(a.psi, b.psi)  # type: ignore[arg-type]


def test_fedmap_layout_fields_and_bounds_follow_config() -> None:
    cfg = SimulationConfig(bounds=BoundsConfig(theta=3.0, grad_psi=0.5))
    layout = make_strategy(cfg).layout(n_theta=N_THETA, n_psi=N_PSI)
    assert isinstance(layout, VectorLayout)
    assert layout.names == ("omega_theta", "omega", "omega_grad_psi", "omega_prior")
    assert layout.size == N_THETA + 1 + N_PSI + 1
    bounds = {f.name: f.bound for f in layout.fields}
    scaled = make_strategy(cfg).layout(n_theta=N_THETA, n_psi=N_PSI, psi_grad_scale=26)
    assert scaled is not None
    assert {f.name: f.bound for f in scaled.fields}["omega_grad_psi"] == 0.5 * 26
    assert bounds["omega_theta"] == 3.0
    assert bounds["omega_grad_psi"] == 0.5
    assert bounds["omega"] == 1.0


def test_encode_contribution_clips_to_bounds_and_counts() -> None:
    cfg = SimulationConfig(method=Method.FEDMAP, bounds=BoundsConfig(theta=1.0))
    strategy = make_strategy(cfg)
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    site = replace(_sites()[0], omega=1.0, theta=np.array([0.5, 2.0, -3.0, 0.0, 1.0]))
    vec, clipped = encode_contribution(layout, strategy.contribution(site))
    assert clipped == 2
    assert vec[:N_THETA].tolist() == [0.5, 1.0, -1.0, 0.0, 1.0]


def test_local_method_has_no_layout_and_refuses_to_contribute() -> None:
    strategy = make_strategy(SimulationConfig(method=Method.LOCAL))
    assert strategy.layout(n_theta=3, n_psi=0) is None
    assert not strategy.aggregates
    with pytest.raises(LocalProtocolError):
        strategy.contribution(_sites()[0])


def test_zero_aggregated_weight_aborts() -> None:
    strategy = make_strategy(SimulationConfig(method=Method.FEDAVG))
    layout = strategy.layout(n_theta=2, n_psi=0)
    assert layout is not None
    result = AggregateResult(
        sums=layout.unflatten(np.zeros(layout.size)), contributors=frozenset({"a"})
    )
    with pytest.raises(AbortedError, match="weight"):
        strategy.server_update(GlobalState(round_index=0, gamma=np.zeros(2)), result, None)
