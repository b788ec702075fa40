"""A site's privacy budget: the (epsilon, delta) it may spend over its lifetime.

The guarantee a site states is record-level (epsilon, delta)-DP under
replace-one adjacency (site sizes are public, ``adjacency.py``) for the
composition of *every* release in its ledger.
delta should be well below 1/n for n records (a common choice is 1/n^1.1 or
1e-5 for a few thousand records); this module cannot know n, so it only
enforces 0 < delta < 1.

Sans-I/O: plain data, no clock, no filesystem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedmap_secure.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Target (epsilon, delta) and whether operator-approved non-DP releases may be recorded.

    ``allow_non_dp_releases`` defaults to False: a ``NonPrivateRelease`` is then
    refused outright. When True it is recorded and flagged, never hidden.
    """

    epsilon: float
    delta: float
    allow_non_dp_releases: bool = False

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"Budget.{name} must be a number, got {type(value).__name__}")
            object.__setattr__(self, name, float(value))
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"Budget.epsilon must be finite and > 0, got {self.epsilon!r}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"Budget.delta must be in (0, 1), got {self.delta!r}")
        if not isinstance(self.allow_non_dp_releases, bool):
            raise ConfigError("Budget.allow_non_dp_releases must be a bool")
