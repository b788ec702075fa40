"""Conversions from Renyi DP to (epsilon, delta)-DP.

A mechanism is (alpha, rho)-RDP when the Renyi divergence of order alpha
between its output distributions on neighbouring datasets is at most rho
(Mironov 2017). RDP composes by adding rho at each order; the total is then
converted to (epsilon, delta)-DP by minimising over the orders:

- ``CLASSIC`` (Mironov 2017, Proposition 3), the conversion behind the
  moments accountant of Abadi et al. 2016:
      epsilon = min_alpha  rho(alpha) + log(1/delta) / (alpha - 1)
- ``BALLE_2020`` (Balle et al. 2020, "Hypothesis testing interpretations and
  Renyi DP", Theorem 21; equal to Canonne, Kamath and Steinke 2020, Prop. 12):
      epsilon = min_alpha  rho(alpha) + log((alpha - 1) / alpha)
                            - (log(delta) + log(alpha)) / (alpha - 1)
  which is never larger than the classic bound for alpha > 1 and is what
  Opacus' ``get_privacy_spent`` and dp-accounting's ``RdpAccountant`` use.

Both are valid upper bounds; the classic one exists so published numbers that
used it (e.g. Abadi et al.'s epsilon ~ 1.26) can be reproduced.

Sans-I/O: numpy only.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedmap_secure.errors import ConfigError


class RdpConversion(enum.StrEnum):
    """How an RDP curve becomes an (epsilon, delta) statement."""

    BALLE_2020 = "balle-2020"
    CLASSIC = "mironov-2017"


def rdp_to_epsilon(
    orders: Sequence[float], rdp: npt.ArrayLike, delta: float, conversion: RdpConversion
) -> tuple[float, float]:
    """Return (epsilon, optimal order) for the composed RDP curve ``rdp`` at ``orders``.

    Orders must all be > 1. An order whose RDP is infinite contributes nothing;
    if every order is infinite the result is (inf, nan).
    """
    alphas = np.asarray(orders, dtype=np.float64)
    rhos = np.asarray(rdp, dtype=np.float64)
    if alphas.shape != rhos.shape or alphas.ndim != 1 or alphas.size == 0:
        raise ConfigError("orders and rdp must be non-empty 1-d sequences of equal length")
    if np.any(alphas <= 1):
        raise ConfigError("RDP orders must all be > 1")
    if not 0 < delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {delta!r}")
    log_delta = math.log(delta)
    if conversion is RdpConversion.CLASSIC:
        eps = rhos - log_delta / (alphas - 1)
    else:
        eps = rhos + np.log1p(-1 / alphas) - (log_delta + np.log(alphas)) / (alphas - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    if not math.isfinite(float(eps[best])):
        return math.inf, math.nan
    return float(eps[best]), float(alphas[best])
