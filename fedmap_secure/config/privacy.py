"""Configuration of the privacy layers of a run: ``[privacy]`` (DP) and ``[secagg]``.

Defaults are documented in ``default.toml``; the reasoning behind them is in
``fedmap_secure/experiments/PRIVATE_RUN.md``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from fedmap_secure.errors import ConfigError
from fedmap_secure.privacy.accountant_base import AccountantName


class OmegaRelease(enum.Enum):
    """How a training site releases the data term of its FedMAP score omega_k.

    GAUSSIAN: the clipped mean log-likelihood through the Gaussian mechanism
    (``training.dp_score``), charged every round as a ``GaussianEvent``.
    UNIFORM: the data term is replaced by the constant 0, so omega_k =
    exp(clamp(-R_k / N_k)) depends only on the DP model, gamma, psi and the
    public site size: post-processing, no charge.
    """

    GAUSSIAN = "gaussian"
    UNIFORM = "uniform"


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be finite and > 0, got {value!r}")


MAX_EPSILON = 100.0
"""The largest record-level budget a run accepts. Above it (e^100 ~ 1e43) the statement bounds
nothing, and the PLD accountant's numbers overflow (e^epsilon) beyond ~700: a larger budget is
refused with one line pointing at --no-dp, rather than run a ledger that cannot account it."""


def _check_budget(name: str, value: float) -> None:
    _check_positive(name, value)
    if value > MAX_EPSILON:
        raise ConfigError(
            f"{name} = {value:g} is above {MAX_EPSILON:g}: such a budget bounds nothing (and "
            "cannot be accounted); use --no-dp for a non-private comparison run"
        )


@dataclass(frozen=True, kw_only=True)
class SiteBudgetOverride:
    """One site's own budget or participation plan (``[[privacy.site]]`` entries).

    ``epsilon`` replaces the run's per-site budget; ``planned_rounds`` is how
    many rounds the site calibrates its noise for (default: all rounds). A site
    asked to train in more rounds than its budget covers declines them.
    """

    site: str
    epsilon: float | None = None
    planned_rounds: int | None = None

    def __post_init__(self) -> None:
        if not self.site:
            raise ConfigError("privacy.site.site must name a site")
        if self.epsilon is not None:
            _check_budget(f"privacy.site[{self.site}].epsilon", self.epsilon)
        if self.planned_rounds is not None and self.planned_rounds < 1:
            raise ConfigError(f"privacy.site[{self.site}].planned_rounds must be >= 1")


@dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
    """Record-level DP of the training-tier sites (replace-one adjacency, public site sizes).

    ``epsilon``/``delta``: each site's own budget; a site uses delta_k =
    min(delta, 1 / (10 n_k)) so delta is always well below 1/n_k; epsilon is at
    most ``MAX_EPSILON`` (100). DP-SGD runs exactly ``steps_per_round``
    Poisson-sampled steps per round (q_k = min(1, expected_batch_size / n_k),
    clipping bound ``max_grad_norm``).
    With ``omega_release = "gaussian"`` the score releases are calibrated so
    that, on their own, they would cost ``omega_epsilon_share`` of the budget;
    DP-SGD's noise multiplier is then calibrated for the remainder by
    composition. ``reproducible_noise`` draws DP noise from a seeded ChaCha20
    stream (derived from the run seed): reproducible, NOT secret.
    """

    enabled: bool = True
    epsilon: float = 4.0
    delta: float = 1e-5
    accountant: AccountantName = AccountantName.DP_ACCOUNTING_PLD
    max_grad_norm: float = 1.0
    expected_batch_size: int = 32
    steps_per_round: int = 10
    omega_release: OmegaRelease = OmegaRelease.GAUSSIAN
    omega_epsilon_share: float = 0.1
    reproducible_noise: bool = False
    site: tuple[SiteBudgetOverride, ...] = ()

    def __post_init__(self) -> None:
        if self.enabled:
            _check_budget("privacy.epsilon", self.epsilon)
        else:
            _check_positive("privacy.epsilon", self.epsilon)
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"privacy.delta must be in (0, 1), got {self.delta!r}")
        _check_positive("privacy.max_grad_norm", self.max_grad_norm)
        if self.expected_batch_size < 1 or self.steps_per_round < 1:
            raise ConfigError("privacy.expected_batch_size and steps_per_round must be >= 1")
        if not 0 < self.omega_epsilon_share < 1:
            raise ConfigError(
                f"privacy.omega_epsilon_share must be in (0, 1), got {self.omega_epsilon_share}"
            )
        names = [o.site for o in self.site]
        if len(set(names)) != len(names):
            raise ConfigError(f"privacy.site names a site twice: {sorted(names)}")

    def override_for(self, site: str) -> SiteBudgetOverride | None:
        return next((o for o in self.site if o.site == site), None)


@dataclass(frozen=True, kw_only=True)
class SecAggSettings:
    """Secure aggregation among the training-tier sites (``[secagg]``).

    n is the number of training-tier sites; k and t come from
    ``secagg.config.derive_parameters`` for the declared threat model.
    ``max_colluding_sites`` (absent: ``floor(corrupt_fraction * n)``) states
    c_max as an integer; a positive fraction that rounds down to 0 is refused
    without it (``secagg.config.max_colluding``).
    """

    enabled: bool = True
    dropout_fraction: float = 0.25
    corrupt_fraction: float = 0.25
    bits: int = 64
    security_parameter: int = 40
    max_colluding_sites: int | None = None

    def __post_init__(self) -> None:
        for name in ("dropout_fraction", "corrupt_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"secagg.{name} must be in [0, 1), got {value!r}")
        if not 16 <= self.bits <= 64:
            raise ConfigError(f"secagg.bits must be in [16, 64], got {self.bits}")
        c = self.max_colluding_sites
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < 0):
            raise ConfigError(f"secagg.max_colluding_sites must be an int >= 0, got {c!r}")


class ClientDpMechanism(enum.Enum):
    """The integer noise each site adds inside secure aggregation (``[client_dp]``)."""

    DISCRETE_GAUSSIAN = "ddg"
    SKELLAM = "skellam"


@dataclass(frozen=True, kw_only=True)
class ClientDpSettings:
    """Client-level (site-level) DP of the securely aggregated sums (``[client_dp]``).

    Off by default. When on, every aggregating method contributes clipped model
    *updates* (FedMAP: omega (theta - gamma) and omega grad_psi), each field
    clipped to its own L2 norm (``clip_theta``, ``clip_psi``; FedMAP's ICNN gradient
    gets its own share ``psi_share`` of the noise budget), and each site
    adds its share of integer noise before masking; the server divides the sums
    by the number of contributors. ``epsilon``/``delta`` is the client-level
    budget for the whole run, kept in the server's ledger. ``local_noise_std``
    is each site's noise std in integer levels (it fixes the ring usage; the
    scale follows from the budget), ``beta`` the conditional-rounding
    parameter, ``max_wrap_probability`` the per-round bound the setup check
    must prove. See ``fedmap_secure/client_dp/calibration.py``.
    """

    enabled: bool = False
    mechanism: ClientDpMechanism = ClientDpMechanism.DISCRETE_GAUSSIAN
    epsilon: float = 8.0
    delta: float = 1e-3
    clip_theta: float = 1.0
    clip_psi: float = 1.0
    psi_share: float | None = None
    """FedMAP: the ICNN gradient's share rho of the squared L2 sensitivity (its noise
    allocation; ``fedmap.client_level``): None = clip_psi^2 / (clip_theta^2 + clip_psi^2),
    today's split (0.5 at the default clips); 0 = psi is not released (the prior stays at
    its initial value)."""
    local_noise_std: float = 65536.0
    beta: float = math.exp(-0.5)
    max_wrap_probability: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("epsilon", "clip_theta", "clip_psi", "local_noise_std"):
            _check_positive(f"client_dp.{name}", getattr(self, name))
        if not (math.isfinite(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"client_dp.delta must be in (0, 1), got {self.delta!r}")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"client_dp.beta must be in [0, 1), got {self.beta!r}")
        if self.psi_share is not None and not (
            math.isfinite(self.psi_share) and 0 <= self.psi_share < 1
        ):
            raise ConfigError(f"client_dp.psi_share must be in [0, 1), got {self.psi_share!r}")
        if not 0 < self.max_wrap_probability < 1:
            raise ConfigError("client_dp.max_wrap_probability must be in (0, 1)")
