"""Property: the FedMAP server update from sums equals the per-site reference formula."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedmap_secure.aggregation import PlainSum
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.fedmap.methods import GlobalState, encode_contribution, make_strategy

N_THETA, N_PSI = 3, 4
finite = st.floats(-5, 5, allow_nan=False, allow_infinity=False, width=64)
site_values = st.tuples(
    arrays(np.float64, N_THETA, elements=finite),
    st.floats(1e-3, 1.0),
    arrays(np.float64, N_PSI, elements=finite),
    st.floats(-100, 100),
)


class _Site:
    def __init__(self, theta: np.ndarray, omega: float, grad: np.ndarray, prior: float) -> None:
        self.theta, self.omega, self.grad, self.prior = theta, omega, grad, prior
        self.n_train = 10

    def theta_vector(self) -> np.ndarray:
        return self.theta

    def gamma_vector(self) -> np.ndarray:
        return np.zeros_like(self.theta)

    def score(self) -> tuple[float, float]:
        return self.omega, self.prior

    def psi_gradient(self) -> np.ndarray:
        return self.grad


@settings(max_examples=60, deadline=None)
@given(st.lists(site_values, min_size=1, max_size=6), arrays(np.float64, N_PSI, elements=finite))
def test_fedmap_update_from_sums(
    values: list[tuple[np.ndarray, float, np.ndarray, float]], psi: np.ndarray
) -> None:
    cfg = SimulationConfig(method=Method.FEDMAP)
    strategy = make_strategy(cfg)
    layout = strategy.layout(n_theta=N_THETA, n_psi=N_PSI)
    assert layout is not None
    sites = [_Site(*v) for v in values]
    inputs = {
        f"s{i}": encode_contribution(layout, strategy.contribution(s))[0]
        for i, s in enumerate(sites)
    }
    result = PlainSum().aggregate(round_index=0, layout=layout, inputs=inputs, context=b"")
    mask = np.array([True, False, True, False])
    nxt, log = strategy.server_update(
        GlobalState(round_index=0, gamma=np.zeros(N_THETA), psi=psi), result, mask
    )
    w = sum(s.omega for s in sites)
    gamma_ref = sum(s.omega * s.theta for s in sites) / w
    psi_ref = psi - cfg.server.lr_psi * sum(s.omega * s.grad for s in sites) / w
    psi_ref[mask] = np.maximum(psi_ref[mask], 0.0)
    np.testing.assert_allclose(nxt.gamma, gamma_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(nxt.psi, psi_ref, rtol=1e-9, atol=1e-12)  # type: ignore[arg-type]
    assert log.weighted_mean_prior is not None
    assert abs(log.weighted_mean_prior - sum(s.omega * s.prior for s in sites) / w) < 1e-9
