"""The methods under client-level DP: clipped updates, summed with noise, fixed denominator.

With ``[client_dp]`` on, a site's contribution is its model *update* rather
than its weighted model, each field is clipped to an L2 norm (the field's
declared bound, ``client_dp.clip_theta`` / ``clip_psi``) and each site adds
its share of integer noise inside secure aggregation
(``fedmap_secure.client_dp``). The server divides by the number of
contributors n_c, which secure aggregation reveals anyway, instead of by a
data-dependent weight sum:

- FedAvg / FedProx: field ``delta_theta`` = theta_k - gamma;
  gamma_next = gamma + sum_k delta_theta_k / n_c (uniform site weights, the
  DP-FedAvg convention of McMahan et al. 2018).
- FedMAP: fields ``omega_delta_theta`` = omega_k (theta_k - gamma) and
  ``omega_grad_psi`` = omega_k g_k; gamma_next = gamma + sum / n_c,
  psi_next = clamp_nonneg(psi - lr_psi * sum omega_k g_k / n_c).

**The ICNN gradient's own clipping and noise allocation.** The raw omega_k g_k is
clipped to ``clip_psi`` (its own clipping norm, independent of ``clip_theta``). Its
share of the noise budget is ``psi_share`` = rho: the site sends lambda omega_k g_k
with lambda = sqrt(rho / (1 - rho)) clip_theta / clip_psi, so in the encoded vector
the two fields have L2 bounds B_theta = clip_theta and B_psi = lambda clip_psi with
B_psi^2 / (B_theta^2 + B_psi^2) = rho; the server divides the psi sum by lambda. The
noise is one Gaussian of std z c per coordinate, c = sqrt(B_theta^2 + B_psi^2), so the
release is the composition of two Gaussian mechanisms whose squared sensitivity-to-
noise ratios (the Gaussian-DP mu^2, or RDP's alpha Delta^2 / (2 sigma^2)) are
(1 - rho) / z^2 and rho / z^2: a split of the round's budget in the proportions
1 - rho (update) and rho (ICNN gradient), with effective noise multipliers
z / sqrt(1 - rho) on the update and z / sqrt(rho) on the ICNN gradient. The
accounting is unchanged (it sees the whole vector with sensitivity c).
rho = 0 leaves the ICNN gradient out (psi keeps its initial value; the whole budget
goes to the update). Unset, rho = clip_psi^2 / (clip_theta^2 + clip_psi^2) (lambda =
1), the split before this option (0.5 at the default clips).

Departure from FedMAP (stated in docs/ALGORITHM.md): the weighted mean
sum omega theta / sum omega becomes gamma + sum omega (theta - gamma) / n_c,
so a site with a low score moves gamma less rather than having its weight
renormalised. The weight sum is itself site data; with 4-5 sites its noisy
value would be useless as a denominator.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import AggregateResult, Field, FloatVector, VectorLayout
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.errors import AbortedError, ConfigError, LocalProtocolError
from fedmap_secure.fedmap.methods import (
    FedAvgStrategy,
    FedMapStrategy,
    FedProxStrategy,
    GlobalState,
    MethodStrategy,
    ServerLog,
    TrainedSite,
)


def _mean_over_contributors(result: AggregateResult, name: str) -> tuple[FloatVector, int]:
    n_c = len(result.contributors)
    if n_c == 0:
        raise AbortedError("no contributor in the aggregate")
    return result.sums[name] / n_c, n_c


def _log(state: GlobalState, result: AggregateResult, n_c: int) -> ServerLog:
    return ServerLog(
        round_index=state.round_index,
        contributors=n_c,
        weight_sum=float(n_c),
        weighted_mean_prior=None,
        clipped_coordinates=result.clipped_coordinates,
    )


class ClientLevelFedAvg(FedAvgStrategy):
    """FedAvg on clipped updates with a fixed denominator (see module docstring)."""

    def layout(self, *, n_theta: int, n_psi: int, psi_grad_scale: int = 1) -> VectorLayout | None:
        clip = self.config.client_dp.clip_theta
        return VectorLayout((Field(name="delta_theta", length=n_theta, bound=clip),))

    def contribution(self, site: TrainedSite) -> dict[str, FloatVector]:
        return {"delta_theta": site.theta_vector() - site.gamma_vector()}

    def server_update(
        self, state: GlobalState, result: AggregateResult, psi_nonneg: npt.NDArray[np.bool_] | None
    ) -> tuple[GlobalState, ServerLog]:
        step, n_c = _mean_over_contributors(result, "delta_theta")
        nxt = GlobalState(
            round_index=state.round_index + 1, gamma=state.gamma + step, psi=state.psi
        )
        return nxt, _log(state, result, n_c)


class ClientLevelFedProx(ClientLevelFedAvg):
    """FedProx's proximal training with the client-level FedAvg aggregation."""

    method = Method.FEDPROX
    site_prior = FedProxStrategy.site_prior


def psi_scale(config: SimulationConfig) -> float:
    """lambda of the module docstring (0 when the ICNN gradient is not released)."""
    c = config.client_dp
    if c.psi_share is None:
        return 1.0
    if c.psi_share == 0:
        return 0.0
    return math.sqrt(c.psi_share / (1.0 - c.psi_share)) * c.clip_theta / c.clip_psi


class ClientLevelFedMap(FedMapStrategy):
    """FedMAP on clipped omega-weighted updates with a fixed denominator; the ICNN gradient
    with its own clipping norm and share of the noise budget (module docstring)."""

    def layout(self, *, n_theta: int, n_psi: int, psi_grad_scale: int = 1) -> VectorLayout | None:
        c = self.config.client_dp
        lam = psi_scale(self.config)
        theta = Field(name="omega_delta_theta", length=n_theta, bound=c.clip_theta)
        if lam == 0:
            return VectorLayout((theta,))
        return VectorLayout(
            (theta, Field(name="omega_grad_psi", length=n_psi, bound=lam * c.clip_psi))
        )

    def contribution(self, site: TrainedSite) -> dict[str, FloatVector]:
        omega, _ = site.score()
        out = {"omega_delta_theta": omega * (site.theta_vector() - site.gamma_vector())}
        lam = psi_scale(self.config)
        if lam > 0:  # lambda * (omega g clipped to clip_psi), the encoder clips at lambda clip_psi
            out["omega_grad_psi"] = lam * omega * site.psi_gradient()
        return out

    def server_update(
        self, state: GlobalState, result: AggregateResult, psi_nonneg: npt.NDArray[np.bool_] | None
    ) -> tuple[GlobalState, ServerLog]:
        if state.psi is None or psi_nonneg is None:
            raise LocalProtocolError("fedmap server update needs psi and its non-negativity mask")
        step, n_c = _mean_over_contributors(result, "omega_delta_theta")
        lam = psi_scale(self.config)
        psi = state.psi
        if lam > 0:
            grad, _ = _mean_over_contributors(result, "omega_grad_psi")
            psi = state.psi - self.config.server.lr_psi * grad / lam
            psi = np.where(psi_nonneg, np.maximum(psi, 0.0), psi)
        nxt = GlobalState(round_index=state.round_index + 1, gamma=state.gamma + step, psi=psi)
        return nxt, _log(state, result, n_c)


_CLIENT_LEVEL: dict[Method, type[MethodStrategy]] = {
    Method.FEDAVG: ClientLevelFedAvg,
    Method.FEDPROX: ClientLevelFedProx,
    Method.FEDMAP: ClientLevelFedMap,
}


def client_level_strategy(config: SimulationConfig) -> MethodStrategy:
    """The client-level variant of ``config.method``; ``local`` aggregates nothing."""
    cls = _CLIENT_LEVEL.get(config.method)
    if cls is None:
        raise ConfigError(
            f"client-level DP protects an aggregate; method {config.method.value!r} has none"
        )
    return cls(config)
