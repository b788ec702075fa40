"""Reduce a list of events to a canonical multiset of mechanisms before accounting.

Sequential composition is commutative, so the privacy loss of a list of events
depends only on how many times each distinct mechanism appears. Grouping
identical mechanisms and self-composing them with their total count lets the
PLD/PRV accountants use one FFT self-convolution per distinct mechanism instead
of one convolution per round (same value, far faster). Parameters are grouped
by exact float equality; nothing is rounded.

A DP-SGD step with sample rate 1 is *not* merged with ``GaussianEvent``: under
replace-one adjacency (``adjacency.py``) a replaced record moves the clipped
gradient sum by up to 2C (C to -C), while a ``GaussianEvent``'s sensitivity S is
already the largest change between neighbours. The accountants handle rate 1.

Sans-I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fedmap_secure.privacy.events import (
    DistributedDiscreteGaussianEvent,
    DistributedSkellamEvent,
    Event,
    GaussianEvent,
    NonPrivateRelease,
    SubsampledGaussianEvent,
    flatten,
)


@dataclass(frozen=True, kw_only=True)
class MechanismMix:
    """Distinct mechanisms with their total repetition counts, sorted for determinism.

    ``subsampled``: (noise_multiplier, sample_rate, steps), sample_rate in (0, 1].
    ``gaussian``: (noise_multiplier, count).
    ``zcdp``: (rho, xi, count) of the client-level distributed mechanisms.
    ``non_private``: descriptions of the non-DP releases (not composable).
    """

    subsampled: tuple[tuple[float, float, int], ...]
    gaussian: tuple[tuple[float, int], ...]
    non_private: tuple[str, ...]
    zcdp: tuple[tuple[float, float, int], ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.subsampled or self.gaussian or self.non_private or self.zcdp)


def mechanism_mix(events: Sequence[Event]) -> MechanismMix:
    """Flatten compositions and group identical mechanisms, summing their counts."""
    subsampled: Counter[tuple[float, float]] = Counter()
    gaussian: Counter[float] = Counter()
    zcdp: Counter[tuple[float, float]] = Counter()
    non_private: list[str] = []
    for leaf in flatten(list(events)):
        if isinstance(leaf, SubsampledGaussianEvent):
            subsampled[(leaf.noise_multiplier, leaf.sample_rate)] += leaf.steps
        elif isinstance(leaf, GaussianEvent):
            gaussian[leaf.noise_multiplier] += leaf.count
        elif isinstance(leaf, DistributedDiscreteGaussianEvent | DistributedSkellamEvent):
            zcdp[leaf.zcdp()] += leaf.count
        elif isinstance(leaf, NonPrivateRelease):
            non_private.append(leaf.description)
    return MechanismMix(
        subsampled=tuple(sorted((s, q, n) for (s, q), n in subsampled.items())),
        gaussian=tuple(sorted(gaussian.items())),
        non_private=tuple(non_private),
        zcdp=tuple(sorted((rho, xi, n) for (rho, xi), n in zcdp.items())),
    )
