"""The seam between a round's float vectors and the ring secure aggregation sums in.

A ``RoundEncoder`` turns one site's float vector into a vector over
Z_{2^bits} (on the site) and the ring sum back into float sums (on the
server). The default is the fixed-point ``Quantizer`` (``ring`` is None: the
length and parameters follow from the layout); client-level DP
(``fedmap_secure.client_dp``) plugs in an encoder that clips, rotates, rounds
and adds its share of integer noise, and announces its own ``RingSpec`` so
that the encoding's public parameters are bound into the session.

Sans-I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedmap_secure.aggregation import AggregateResult, FloatVector, VectorLayout
from fedmap_secure.secagg.config import RingSpec
from fedmap_secure.secagg.plausibility import check_aggregate
from fedmap_secure.secagg.quantize import Quantizer

log = logging.getLogger(__name__)


class RoundEncoder(Protocol):
    """Encodes site vectors into the ring and decodes the ring sum (one round)."""

    @property
    def ring(self) -> RingSpec | None:
        """The encoding's length and parameter digest, or None for the layout default."""
        ...

    def encode(
        self, vector: FloatVector, *, random_bytes: Callable[[int], bytes]
    ) -> npt.NDArray[np.uint64]:
        """One site's vector as ring elements (run at the site, before masking)."""
        ...

    def decode(self, total: npt.NDArray[np.uint64]) -> tuple[FloatVector, int]:
        """(float sums in layout order, clipped-coordinate count seen by the server)."""
        ...


RoundEncoderFactory = Callable[[int, VectorLayout, bytes], RoundEncoder]
"""(round index, layout, round context) -> the round's encoder. A factory may refuse
(raise) before anything is encoded, e.g. when a privacy budget does not cover the round."""


def fixed_point_encoders(*, n_max: int, bits: int) -> RoundEncoderFactory:
    """The default: ``Quantizer.auto`` for every round."""

    def factory(round_index: int, layout: VectorLayout, context: bytes) -> RoundEncoder:
        return Quantizer.auto(layout, n_max=n_max, bits=bits)

    return factory


def decode_result(
    encoder: RoundEncoder,
    layout: VectorLayout,
    total: npt.NDArray[np.uint64],
    contributors: frozenset[str],
    round_index: int,
) -> AggregateResult:
    """The server's end of a round (in-process or gRPC): decode the ring sum into named sums.

    The decoded sum must pass the free plausibility checks
    (``plausibility.check_aggregate``); otherwise ``ImplausibleAggregateError``
    rejects the round's update (the caller keeps the previous model).
    """
    values, clipped = encoder.decode(total)
    resolution = (
        encoder.error_bound(1) if isinstance(encoder, Quantizer) else None
    )  # one fixed-point level per coordinate (plus float64 rounding)
    check_aggregate(
        layout=layout,
        sums=values,
        clipped=clipped,
        survivors=len(contributors),
        resolution=resolution,
        round_index=round_index,
    )
    if clipped:
        log.warning(
            "round %d: %d coordinates exceeded their declared bound and were clipped; "
            "the declared ranges in the vector layout may be too small",
            round_index,
            clipped,
        )
    return AggregateResult(
        sums=layout.unflatten(values), contributors=contributors, clipped_coordinates=clipped
    )
