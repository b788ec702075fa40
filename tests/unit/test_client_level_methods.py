"""Methods under client-level DP: clipped updates, fixed denominator, formulas from sums."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest

from fedmap_secure.aggregation import AggregateResult, FloatVector, PlainSum
from fedmap_secure.config.privacy import ClientDpSettings
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.errors import AbortedError, ConfigError
from fedmap_secure.fedmap.client_level import ClientLevelFedMap, ClientLevelFedProx
from fedmap_secure.fedmap.methods import GlobalState, encode_contribution, make_strategy

N_THETA, N_PSI = 6, 9


@dataclass
class Trained:
    theta: FloatVector
    gamma: FloatVector
    omega: float
    grad: FloatVector
    n_train: int = 50

    def theta_vector(self) -> FloatVector:
        return self.theta

    def gamma_vector(self) -> FloatVector:
        return self.gamma

    def score(self) -> tuple[float, float]:
        return self.omega, 1.0

    def psi_gradient(self) -> FloatVector:
        return self.grad


def _config(method: Method, **client: float) -> SimulationConfig:
    settings = dataclasses.replace(ClientDpSettings(enabled=True), **client)  # type: ignore[arg-type]
    return SimulationConfig(method=method, client_dp=settings)


def _round(method: Method, sites: list[Trained], state: GlobalState) -> GlobalState:
    strategy = make_strategy(_config(method, clip_theta=100.0, clip_psi=100.0))
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    inputs = {
        f"s{i}": encode_contribution(layout, strategy.contribution(s))[0]
        for i, s in enumerate(sites)
    }
    result = PlainSum().aggregate(round_index=0, layout=layout, inputs=inputs, context=b"")
    nonneg = np.zeros(N_PSI, dtype=bool)
    return strategy.server_update(state, result, nonneg)[0]


def _sites(gamma: FloatVector) -> list[Trained]:
    rng = np.random.default_rng(3)
    return [
        Trained(
            theta=gamma + rng.normal(0, 1, N_THETA),
            gamma=gamma,
            omega=float(rng.uniform(0.1, 1)),
            grad=rng.normal(0, 1, N_PSI),
        )
        for _ in range(3)
    ]


@pytest.mark.parametrize("method", [Method.FEDAVG, Method.FEDPROX])
def test_fedavg_moves_gamma_by_the_mean_update(method: Method) -> None:
    gamma = np.linspace(-1, 1, N_THETA)
    sites = _sites(gamma)
    nxt = _round(method, sites, GlobalState(round_index=0, gamma=gamma))
    np.testing.assert_allclose(nxt.gamma, np.mean([s.theta for s in sites], axis=0))


def test_fedmap_uses_omega_weighted_updates_over_the_contributor_count() -> None:
    gamma = np.linspace(-1, 1, N_THETA)
    psi = np.ones(N_PSI)
    sites = _sites(gamma)
    nxt = _round(Method.FEDMAP, sites, GlobalState(round_index=0, gamma=gamma, psi=psi))
    expected = gamma + sum(s.omega * (s.theta - gamma) for s in sites) / 3
    np.testing.assert_allclose(nxt.gamma, expected)
    lr = SimulationConfig().server.lr_psi
    assert nxt.psi is not None
    np.testing.assert_allclose(nxt.psi, psi - lr * sum(s.omega * s.grad for s in sites) / 3)


def test_fields_carry_their_l2_clip_as_bound() -> None:
    strategy = make_strategy(_config(Method.FEDMAP, clip_theta=0.5, clip_psi=2.0))
    assert isinstance(strategy, ClientLevelFedMap)
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    assert [(f.name, f.bound) for f in layout.fields] == [
        ("omega_delta_theta", 0.5),
        ("omega_grad_psi", 2.0),
    ]
    assert isinstance(make_strategy(_config(Method.FEDPROX)), ClientLevelFedProx)


def test_local_has_no_aggregate_to_protect() -> None:
    with pytest.raises(ConfigError, match="has none"):
        make_strategy(_config(Method.LOCAL))


def test_an_empty_aggregate_is_refused() -> None:
    strategy = make_strategy(_config(Method.FEDAVG))
    layout = strategy.layout(n_theta=N_THETA, n_psi=0)
    assert layout is not None
    empty = AggregateResult(sums=layout.unflatten(np.zeros(layout.size)), contributors=frozenset())
    with pytest.raises(AbortedError, match="no contributor"):
        strategy.server_update(GlobalState(round_index=0, gamma=np.zeros(N_THETA)), empty, None)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_psi_share_splits_the_squared_sensitivity_and_the_server_undoes_the_scale(
    share: float,
) -> None:
    config = _config(Method.FEDMAP, clip_theta=2.0, clip_psi=50.0, psi_share=share)
    strategy = make_strategy(config)
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    bounds = {f.name: f.bound for f in layout.fields}
    total = bounds["omega_delta_theta"] ** 2 + bounds["omega_grad_psi"] ** 2
    assert bounds["omega_grad_psi"] ** 2 / total == pytest.approx(share)
    gamma = np.zeros(N_THETA)
    sites = [  # small enough that nothing is clipped: the psi step is lr * mean(omega g)
        Trained(theta=gamma + 0.1, gamma=gamma, omega=0.5, grad=np.full(N_PSI, 1.0 * (i + 1)))
        for i in range(2)
    ]
    inputs = {
        f"s{i}": encode_contribution(layout, strategy.contribution(s))[0]
        for i, s in enumerate(sites)
    }
    result = PlainSum().aggregate(round_index=0, layout=layout, inputs=inputs, context=b"")
    psi = np.ones(N_PSI)
    state = GlobalState(round_index=0, gamma=gamma, psi=psi)
    nxt = strategy.server_update(state, result, np.zeros(N_PSI, dtype=bool))[0]
    assert nxt.psi is not None
    expected = psi - config.server.lr_psi * np.mean([0.5 * s.grad for s in sites], axis=0)
    np.testing.assert_allclose(nxt.psi, expected)


def test_psi_share_zero_releases_no_icnn_gradient() -> None:
    strategy = make_strategy(_config(Method.FEDMAP, psi_share=0.0))
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    assert [f.name for f in layout.fields] == ["omega_delta_theta"]
    gamma = np.zeros(N_THETA)
    site = Trained(theta=gamma + 0.1, gamma=gamma, omega=0.5, grad=np.ones(N_PSI))
    assert set(strategy.contribution(site)) == {"omega_delta_theta"}
    result = PlainSum().aggregate(
        round_index=0,
        layout=layout,
        inputs={"s0": encode_contribution(layout, strategy.contribution(site))[0]},
        context=b"",
    )
    psi = np.ones(N_PSI)
    nxt = strategy.server_update(
        GlobalState(round_index=0, gamma=gamma, psi=psi), result, np.zeros(N_PSI, dtype=bool)
    )[0]
    np.testing.assert_array_equal(nxt.psi, psi)


@pytest.mark.parametrize("share", [-0.1, 1.0, float("nan")])
def test_psi_share_outside_0_1_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match="psi_share"):
        ClientDpSettings(enabled=True, psi_share=share)
