"""Free plausibility checks on a decoded secure sum (after ``RoundEncoder.decode``).

Secure aggregation hides every input, so the server cannot check one site's
vector; it can check the sum. With S contributors, each honest site clips
every coordinate i to its declared bound B_i and encodes it with resolution
r_i (one fixed-point level, 2^-f_i), so for honest inputs

    |sum_i| <= S * (B_i + r_i)          for every coordinate i, and
    0 <= clipped <= S * m               (m: coordinates per site).

A decoded sum outside these ranges is impossible for honest inputs: a corrupt
site (or a corrupt server-side decode) sent values outside the ring range an
honest encoder produces (threat O1 narrows to what stays inside the ranges).
``check_aggregate`` raises ``ImplausibleAggregateError`` (a typed rejection:
the caller keeps the previous model and logs it); it never repairs the sum.

The coordinate check applies to encoders with a per-coordinate bound (the
fixed-point ``Quantizer``: ``resolution`` given); a client-level DP encoder
adds unbounded (discrete Gaussian / Skellam) noise to the sum, so only the
counter check applies to it. Sans-I/O: numpy only.
"""

from __future__ import annotations

import numpy as np

from fedmap_secure.aggregation import FloatVector, VectorLayout
from fedmap_secure.errors import ImplausibleAggregateError


def check_aggregate(
    *,
    layout: VectorLayout,
    sums: FloatVector,
    clipped: int,
    survivors: int,
    resolution: FloatVector | None,
    round_index: int,
) -> None:
    """Raise ``ImplausibleAggregateError`` unless the decoded sum is possible for honest sites."""
    if survivors < 1:
        raise ImplausibleAggregateError(f"round {round_index}: a sum over {survivors} sites")
    if not 0 <= clipped <= survivors * layout.size:
        raise ImplausibleAggregateError(
            f"round {round_index}: clipped-coordinate count {clipped} outside "
            f"[0, {survivors} sites x {layout.size} coordinates]"
        )
    if sums.shape != (layout.size,) or not np.all(np.isfinite(sums)):
        raise ImplausibleAggregateError(f"round {round_index}: decoded sum is not finite")
    if resolution is None:
        return
    limit = survivors * (layout.bounds() + resolution)
    limit = limit * (1.0 + 1e-9)  # float64 rounding of the decode
    over = np.flatnonzero(np.abs(sums) > limit)
    if over.size:
        i = int(over[0])
        field = _field_of(layout, i)
        raise ImplausibleAggregateError(
            f"round {round_index}: {over.size} coordinate(s) of the sum exceed what "
            f"{survivors} honest sites can produce, e.g. {field}: |{sums[i]:.6g}| > "
            f"{survivors} x {layout.bounds()[i]:.6g}"
        )


def _field_of(layout: VectorLayout, index: int) -> str:
    start = 0
    for f in layout.fields:
        if index < start + f.length:
            return f"{f.name}[{index - start}]"
        start += f.length
    return f"coordinate {index}"
