"""Candidates of FedMAP's final personalisation solve (``[personalisation] candidates``).

A candidate says where the solve starts and which prior it is solved under:

- ``"map:<lambda>"``: from the final gamma, under (R_psi(theta; gamma) + lambda/2
  ||theta - gamma||^2) / n_k (the configured solve is ``map:<prior_precision>``);
- ``"finetune"``: from the final gamma, without any prior (neither R_psi nor the
  Gaussian part): the site's data alone decide where it goes from gamma;
- ``"local"``: from the run's initial model (round 0's gamma), without any prior:
  the site's own model, ignoring everything the federation produced.

Their order by prior strength (strongest first: larger lambda, then ``finetune``, then
``local``) breaks ties when a site chooses among them on its own validation rows
(``fedmap_secure.fedmap.solve_choice``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from fedmap_secure.errors import ConfigError


class SolveStart(enum.Enum):
    """Where a candidate solve starts."""

    GAMMA = "gamma"
    """The final gamma the server broadcast."""
    INITIAL = "initial"
    """Round 0's gamma (the run's initial model, seeded from the run seed)."""


class SolveSelect(enum.Enum):
    """How a site picks the solve it keeps (``[personalisation] select``)."""

    NONE = "none"
    """Always the configured solve (``map:<prior_precision>``)."""
    VALIDATION = "validation"
    """Each site chooses among the candidates on its own held-out rows."""
    CLIENT_DP = "client_dp"
    """``VALIDATION`` in runs with client-level DP (``[client_dp] enabled``), else ``NONE``:
    where gamma carries the aggregation noise (docs/TUNING.md)."""

    def applies(self, *, client_dp: bool) -> bool:
        """Whether a site chooses on its held-out rows in a run with/without client-level DP."""
        return self is SolveSelect.VALIDATION or (self is SolveSelect.CLIENT_DP and client_dp)


@dataclass(frozen=True, kw_only=True)
class SolveCandidate:
    """One candidate solve. ``prior_precision`` None: no prior at all (R_psi dropped too)."""

    token: str
    start: SolveStart
    prior_precision: float | None

    @property
    def strength(self) -> tuple[int, float]:
        """Sort key, larger = stronger prior: map:lambda > finetune > local."""
        if self.prior_precision is not None:
            return (2, self.prior_precision)
        return (1, 0.0) if self.start is SolveStart.GAMMA else (0, 0.0)


def map_token(prior_precision: float) -> str:
    """The token of the configured MAP solve (``map:10`` for 10.0, ``map:2.5`` for 2.5)."""
    return f"map:{prior_precision:g}"


def parse_solve_candidate(spec: str) -> SolveCandidate:
    """A candidate from its token; ``ConfigError`` naming the token when it is not one."""
    if spec in ("finetune", "local"):
        start = SolveStart.GAMMA if spec == "finetune" else SolveStart.INITIAL
        return SolveCandidate(token=spec, start=start, prior_precision=None)
    head, sep, value = spec.partition(":")
    if head == "map" and sep:
        try:
            precision = float(value)
        except ValueError:
            precision = math.nan
        if math.isfinite(precision) and precision >= 0:
            return SolveCandidate(
                token=map_token(precision), start=SolveStart.GAMMA, prior_precision=precision
            )
    raise ConfigError(
        f"personalisation.candidates: {spec!r} is not a candidate "
        '(expected "map:<lambda >= 0>", "finetune" or "local")'
    )
