"""``MeteredAggregator``: any ``Aggregator``, with the size and duration of each round recorded."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from fedmap_secure.aggregation import AggregateResult, Aggregator, FloatVector, VectorLayout


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    round_index: int
    layout_size: int
    contributors: int
    seconds: float


class MeteredAggregator:
    """Delegates to ``inner`` and appends one ``RoundRecord`` per ``aggregate`` call."""

    def __init__(self, inner: Aggregator) -> None:
        self.inner = inner
        self.records: list[RoundRecord] = []

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        start = time.perf_counter()
        result = self.inner.aggregate(
            round_index=round_index, layout=layout, inputs=inputs, context=context
        )
        self.records.append(
            RoundRecord(
                round_index=round_index,
                layout_size=layout.size,
                contributors=len(inputs),
                seconds=time.perf_counter() - start,
            )
        )
        return result

    def describe(self) -> dict[str, object]:
        return self.inner.describe()
