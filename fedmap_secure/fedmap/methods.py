"""Federated methods as strategies: what a site contributes and how the server updates.

Each strategy defines

- ``layout``: the named fields (with declared bounds) of one site's contribution;
- ``site_prior``: the prior the site trains under (None, FedProx's fixed
  proximal term, or FedMAP's ICNN prior);
- ``contribution``: the field values a trained site produces;
- ``server_update``: the next global state, computed from ``AggregateResult.sums``
  only (never from one site's values).

Adding a method means adding one class here and one ``Method`` member.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmap_secure.aggregation import AggregateResult, Field, FloatVector, VectorLayout
from fedmap_secure.config.schema import Method, SimulationConfig
from fedmap_secure.errors import AbortedError, LocalProtocolError
from fedmap_secure.fedmap.icnn import BoundPrior, ConvexPrior
from fedmap_secure.training.interface import PriorFn


@dataclass(frozen=True, kw_only=True)
class GlobalState:
    """What the server broadcasts: global model gamma and (FedMAP) ICNN parameters psi."""

    round_index: int
    gamma: FloatVector
    psi: FloatVector | None = None


@dataclass(frozen=True, kw_only=True)
class ServerLog:
    """What the server learned in one round (all of it derived from sums)."""

    round_index: int
    contributors: int
    weight_sum: float
    weighted_mean_prior: float | None
    clipped_coordinates: int


class TrainedSite(Protocol):
    """Site-side quantities a strategy may read after local training."""

    @property
    def n_train(self) -> int: ...

    def theta_vector(self) -> FloatVector: ...

    def gamma_vector(self) -> FloatVector:
        """The global model gamma the site received this round."""
        ...

    def score(self) -> tuple[float, float]:
        """(omega_k, R_k): contribution score and prior value of the trained model."""
        ...

    def psi_gradient(self) -> FloatVector:
        """grad_psi R_psi(theta_k; gamma) at the gamma the site trained against."""
        ...


def encode_contribution(
    layout: VectorLayout, values: Mapping[str, FloatVector]
) -> tuple[FloatVector, int]:
    """Flatten and clip to each field's declared bound; returns (vector, clipped count).

    Sites clip before contributing so that a plain-sum run and a secure run
    (which clips to the same bounds) compute the same update; the count stays
    in the site's report.
    """
    vec = layout.flatten(values)
    bounds = layout.bounds()
    clipped = int(np.count_nonzero(np.abs(vec) > bounds))
    return np.clip(vec, -bounds, bounds), clipped


def _weight_sum(result: AggregateResult, name: str) -> float:
    w = float(result.sums[name][0])
    if not (np.isfinite(w) and w > 0):
        raise AbortedError(f"aggregated weight {name!r} is {w}; cannot form a weighted mean")
    return w


class MethodStrategy(abc.ABC):
    """Base of the methods; ``layout`` takes ``psi_grad_scale``, the number of
    coordinates one ICNN is summed over (``ConvexPrior.coordinates_per_net``),
    because the psi gradient of a sum of n ICNN evaluations grows like n."""

    method: ClassVar[Method]
    aggregates: ClassVar[bool] = True
    resets_to_gamma: ClassVar[bool] = True
    uses_icnn: ClassVar[bool] = False

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def layout(
        self, *, n_theta: int, n_psi: int, psi_grad_scale: int = 1
    ) -> VectorLayout | None: ...

    def site_prior(
        self, model: nn.Module, gamma: Sequence[torch.Tensor], prior: ConvexPrior | None
    ) -> PriorFn | None:
        return None

    @abc.abstractmethod
    def contribution(self, site: TrainedSite) -> dict[str, FloatVector]: ...

    @abc.abstractmethod
    def server_update(
        self, state: GlobalState, result: AggregateResult, psi_nonneg: npt.NDArray[np.bool_] | None
    ) -> tuple[GlobalState, ServerLog]: ...


class LocalStrategy(MethodStrategy):
    """Each site trains on its own data only; nothing is ever aggregated."""

    method = Method.LOCAL
    aggregates = False
    resets_to_gamma = False

    def layout(self, *, n_theta: int, n_psi: int, psi_grad_scale: int = 1) -> VectorLayout | None:
        return None

    def contribution(self, site: TrainedSite) -> dict[str, FloatVector]:
        raise LocalProtocolError("the local method never contributes to an aggregate")

    def server_update(
        self, state: GlobalState, result: AggregateResult, psi_nonneg: npt.NDArray[np.bool_] | None
    ) -> tuple[GlobalState, ServerLog]:
        raise LocalProtocolError("the local method has no server update")


class FedAvgStrategy(MethodStrategy):
    """gamma_next = sum_k n_k theta_k / sum_k n_k (fields n_theta, n)."""

    method = Method.FEDAVG

    def layout(self, *, n_theta: int, n_psi: int, psi_grad_scale: int = 1) -> VectorLayout | None:
        b = self.config.bounds
        return VectorLayout(
            (
                Field(name="n_theta", length=n_theta, bound=b.theta * b.sample_count),
                Field(name="n", length=1, bound=b.sample_count),
            )
        )

    def contribution(self, site: TrainedSite) -> dict[str, FloatVector]:
        n = float(site.n_train)
        return {"n_theta": n * site.theta_vector(), "n": np.array([n])}

    def server_update(
        self, state: GlobalState, result: AggregateResult, psi_nonneg: npt.NDArray[np.bool_] | None
    ) -> tuple[GlobalState, ServerLog]:
        w = _weight_sum(result, "n")
        nxt = GlobalState(
            round_index=state.round_index + 1, gamma=result.sums["n_theta"] / w, psi=state.psi
        )
        log = ServerLog(
            round_index=state.round_index,
            contributors=len(result.contributors),
            weight_sum=w,
            weighted_mean_prior=None,
            clipped_coordinates=result.clipped_coordinates,
        )
        return nxt, log


class FedProxStrategy(FedAvgStrategy):
    """FedAvg aggregation; sites train under the fixed prior mu/2 ||theta - gamma||^2."""

    method = Method.FEDPROX

    def site_prior(
        self, model: nn.Module, gamma: Sequence[torch.Tensor], prior: ConvexPrior | None
    ) -> PriorFn | None:
        return ProximalPrior(self.config.fedprox.mu, list(model.parameters()), gamma)


class FedMapStrategy(MethodStrategy):
    """FedMAP from sums: fields omega_theta, omega, omega_grad_psi, omega_prior.

    gamma_next = sum omega_k theta_k / sum omega_k;
    psi_next = clamp_nonneg(psi - lr_psi * sum omega_k g_k / sum omega_k),
    g_k = grad_psi R_psi(theta_k; gamma) evaluated at the gamma of this round.
    """

    method = Method.FEDMAP
    uses_icnn = True

    def layout(self, *, n_theta: int, n_psi: int, psi_grad_scale: int = 1) -> VectorLayout | None:
        b, s = self.config.bounds, self.config.score
        return VectorLayout(
            (
                Field(name="omega_theta", length=n_theta, bound=s.omega_max * b.theta),
                Field(name="omega", length=1, bound=s.omega_max),
                Field(
                    name="omega_grad_psi",
                    length=n_psi,
                    bound=s.omega_max * b.grad_psi * psi_grad_scale,
                ),
                Field(name="omega_prior", length=1, bound=s.omega_max * b.prior),
            )
        )

    def site_prior(
        self, model: nn.Module, gamma: Sequence[torch.Tensor], prior: ConvexPrior | None
    ) -> PriorFn | None:
        if prior is None:
            raise LocalProtocolError("fedmap site has no ICNN prior")
        return IcnnPrior(prior.bind(gamma), list(model.parameters()))

    def contribution(self, site: TrainedSite) -> dict[str, FloatVector]:
        omega, prior_value = site.score()
        return {
            "omega_theta": omega * site.theta_vector(),
            "omega": np.array([omega]),
            "omega_grad_psi": omega * site.psi_gradient(),
            "omega_prior": np.array([omega * prior_value]),
        }

    def server_update(
        self, state: GlobalState, result: AggregateResult, psi_nonneg: npt.NDArray[np.bool_] | None
    ) -> tuple[GlobalState, ServerLog]:
        if state.psi is None or psi_nonneg is None:
            raise LocalProtocolError("fedmap server update needs psi and its non-negativity mask")
        w = _weight_sum(result, "omega")
        gamma = result.sums["omega_theta"] / w
        psi = state.psi - self.config.server.lr_psi * result.sums["omega_grad_psi"] / w
        psi = np.where(psi_nonneg, np.maximum(psi, 0.0), psi)
        log = ServerLog(
            round_index=state.round_index,
            contributors=len(result.contributors),
            weight_sum=w,
            weighted_mean_prior=float(result.sums["omega_prior"][0]) / w,
            clipped_coordinates=result.clipped_coordinates,
        )
        return GlobalState(round_index=state.round_index + 1, gamma=gamma, psi=psi), log


class ProximalPrior:
    """FedProx's mu/2 ||theta - gamma||^2 over ``params`` (a ``StackablePrior``)."""

    def __init__(
        self, mu: float, params: Sequence[torch.Tensor], gamma: Sequence[torch.Tensor]
    ) -> None:
        self._mu, self._params, self._gamma = mu, list(params), list(gamma)
        self._flat_gamma = torch.cat([g.detach().reshape(-1) for g in gamma])

    def __call__(self) -> torch.Tensor:
        terms = [(p - g).pow(2).sum() for p, g in zip(self._params, self._gamma, strict=True)]
        return 0.5 * self._mu * torch.stack(terms).sum()

    @property
    def batch_key(self) -> bytes:
        digest = hashlib.sha256(repr(("fedprox", self._mu)).encode())
        digest.update(self._flat_gamma.numpy().tobytes())
        return digest.digest()

    def stacked(self, flat: torch.Tensor) -> torch.Tensor:
        return 0.5 * self._mu * (flat - self._flat_gamma).pow(2).sum(1)


class IcnnPrior:
    """FedMAP's bound ICNN prior R_psi(theta; gamma) of ``params`` (a ``StackablePrior``)."""

    def __init__(self, bound: BoundPrior, params: Sequence[torch.Tensor]) -> None:
        self._bound, self._params = bound, list(params)

    def __call__(self) -> torch.Tensor:
        return self._bound(self._params)

    @property
    def batch_key(self) -> bytes:
        return self._bound.batch_key

    def stacked(self, flat: torch.Tensor) -> torch.Tensor:
        return self._bound.stacked(flat)


def contribution_layout(
    strategy: MethodStrategy, state: GlobalState, prior: ConvexPrior | None
) -> VectorLayout | None:
    """The round's contribution layout: the ONE derivation every party uses.

    The psi-gradient bound scales with the number of coordinates one ICNN sums
    over (``ConvexPrior.coordinates_per_net``), so the prior is needed, not just
    the sizes; a party that left it out would clip what another does not.
    """
    return strategy.layout(
        n_theta=state.gamma.size,
        n_psi=0 if state.psi is None else state.psi.size,
        psi_grad_scale=1 if prior is None else prior.coordinates_per_net,
    )


_STRATEGIES: dict[Method, type[MethodStrategy]] = {
    s.method: s for s in (LocalStrategy, FedAvgStrategy, FedProxStrategy, FedMapStrategy)
}


def make_strategy(config: SimulationConfig) -> MethodStrategy:
    """The strategy object for ``config.method`` (client-level variant under ``[client_dp]``)."""
    if config.client_dp.enabled:
        from fedmap_secure.fedmap.client_level import client_level_strategy

        return client_level_strategy(config)
    return _STRATEGIES[config.method](config)
