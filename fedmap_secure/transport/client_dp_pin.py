"""A site's own, pinned client-level DP settings for gRPC rounds.

Client-level DP protects the sites' sums *from the server*, so a site must not
take its noise parameters from the server's announcement: it plans its noise
from settings it holds itself (``site.toml``'s ``[client_dp]`` table, or the
job file ``simulate --transport grpc`` writes for each site process). The plan
is ``ClientDpPlanner``'s: the same public function of the settings, planned
rounds, SecAgg parameters, layout and the round's ``SecAggSetup.context`` that
the server's ``ClientLevelRounds`` uses, so an honest server and site derive
the same ``RingSpec``. The ring's digest enters the setup id: a site whose
settings differ from the server's (or that expects client-level DP when the
server runs without it, or the reverse) derives another setup id and refuses
the round; it never encodes with other noise.

The table holds the keys of the run configuration's ``[client_dp]`` (see
``config.privacy.ClientDpSettings``; ``enabled`` may be omitted) plus
``rounds``, the number of rounds the budget is planned over (the run's
``rounds``): a site refuses any round index at or beyond it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedmap_secure.client_dp.rounds import ClientDpPlanner
from fedmap_secure.config.loader import config_to_dict, update_dataclass
from fedmap_secure.config.privacy import ClientDpSettings
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.errors import ConfigError
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.round_encoder import RoundEncoderFactory


@dataclass(frozen=True, kw_only=True)
class PinnedClientDp:
    """Client-level DP settings a site holds itself, and the rounds they are planned over."""

    settings: ClientDpSettings
    rounds: int

    def __post_init__(self) -> None:
        if not self.settings.enabled:
            raise ConfigError("pinned client-level DP settings must have enabled = true")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"client_dp.rounds must be an integer >= 1, got {self.rounds!r}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> PinnedClientDp:
        """Parse a ``[client_dp]`` table (``ConfigError`` naming ``source`` when invalid)."""
        rest = dict(table)
        if "rounds" not in rest:
            raise ConfigError(f"{source}: client_dp.rounds (the run's planned rounds) is required")
        rounds = rest.pop("rounds")
        if rest.get("enabled", True) is not True:
            raise ConfigError(f"{source}: client_dp.enabled must be true (or drop [client_dp])")
        settings = update_dataclass(ClientDpSettings(enabled=True), rest, "client_dp", source)
        try:
            return cls(settings=settings, rounds=rounds)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_table(self) -> dict[str, Any]:
        """The inverse of ``from_table`` (JSON/TOML-ready)."""
        return {**config_to_dict(self.settings), "rounds": self.rounds}

    def encoders(self, secagg: SecAggConfig) -> RoundEncoderFactory:
        """The site's round encoders: the public plan, no ledger charge (see module docstring)."""
        return ClientDpPlanner(self.settings, rounds=self.rounds, secagg=secagg).round_encoder


def pinned_client_dp(config: SimulationConfig) -> dict[str, Any] | None:
    """What the simulation driver pins for each site process (None: client-level DP off)."""
    if not config.client_dp.enabled:
        return None
    return PinnedClientDp(settings=config.client_dp, rounds=config.rounds).to_table()


def site_encoders(
    table: Mapping[str, Any] | None, secagg: SecAggConfig, source: str
) -> RoundEncoderFactory | None:
    """The encoders of a pinned ``[client_dp]`` table, or None (fixed point) without one."""
    if table is None:
        return None
    return PinnedClientDp.from_table(table, source).encoders(secagg)
