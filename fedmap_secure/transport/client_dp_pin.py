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

Every noisy encoding a site sends is first charged to the site's own
client-level ledger, ``<site state dir>/client-dp-sent`` (durable, resumed on
restart; ``client_dp.site_guard``): the site never sends two noisy encodings of
one round index, whatever the server reports about aborted rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmap_secure.client_dp.rounds import ClientDpPlanner
from fedmap_secure.client_dp.site_guard import SiteNoiseGuard
from fedmap_secure.config.loader import config_to_dict, update_dataclass
from fedmap_secure.config.privacy import ClientDpSettings
from fedmap_secure.config.schema import SimulationConfig
from fedmap_secure.errors import ConfigError
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.dp_accounting_accountants import DpAccountingRdpAccountant
from fedmap_secure.privacy.ledger import PrivacyLedger
from fedmap_secure.privacy.ledger_store import open_site_ledger
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

    def encoders(
        self, secagg: SecAggConfig, guard: SiteNoiseGuard | None = None
    ) -> RoundEncoderFactory:
        """The site's round encoders: the public plan, charged to ``guard``'s ledger (the
        site's own) before each noisy encoding when given (see module docstring)."""
        planned = ClientDpPlanner(self.settings, rounds=self.rounds, secagg=secagg).round_encoder
        return planned if guard is None else guard.wrap(planned)

    def open_guard(self, site_state_dir: Path, site: str) -> SiteNoiseGuard:
        """The site's guard over its durable ledger ``<site_state_dir>/client-dp-sent``
        (opened at the first round that asks for a noisy encoding)."""

        def open_ledger() -> PrivacyLedger:
            return open_site_ledger(
                Path(site_state_dir) / SITE_SENT_LEDGER,
                budget=Budget(epsilon=self.settings.epsilon, delta=self.settings.delta),
                accountant=DpAccountingRdpAccountant(),
            )

        return SiteNoiseGuard(open_ledger, site=site)


SITE_SENT_LEDGER = "client-dp-sent"
"""A site's own client-level ledger of the noisy encodings it sent, in its state directory."""


def pinned_client_dp(config: SimulationConfig) -> dict[str, Any] | None:
    """What the simulation driver pins for each site process (None: client-level DP off)."""
    if not config.client_dp.enabled:
        return None
    return PinnedClientDp(settings=config.client_dp, rounds=config.rounds).to_table()


def site_encoders(
    table: Mapping[str, Any] | None,
    secagg: SecAggConfig,
    source: str,
    *,
    state_dir: Path | None = None,
    site: str = "",
) -> RoundEncoderFactory | None:
    """The encoders of a pinned ``[client_dp]`` table, or None (fixed point) without one.

    With ``state_dir`` every noisy encoding is first charged to the site's own
    durable ledger there (``SITE_SENT_LEDGER``), once per round index.
    """
    if table is None:
        return None
    pinned = PinnedClientDp.from_table(table, source)
    guard = None if state_dir is None else pinned.open_guard(state_dir, site)
    return pinned.encoders(secagg, guard)
