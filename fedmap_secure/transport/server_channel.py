"""The gRPC server channel: ``runtime.ServerRuntime`` rounds over an ``AggregationServer``.

``run_round`` announces the round (``FedMapRound``: gamma, psi, run
configuration and the server's ``SecAggSetup``) to every site that joins and
returns the decoded sums of the sites that completed. An aborted round (or a
decoded sum rejected as implausible, SPEC §9.2) returns None: the server has
journalled it and excluded its culprits (``transport.exclusion``), its index is
used up, and the runtime keeps the previous model for the next index; a site
can never make the server exit. ``publish_final`` hands the final announcement to every site that
joins within ``final_timeout`` seconds, and then serves it (``FetchFinal``) to the late roster's
sites (fine-tune and unseen tiers) until each has fetched it or the server's ``late_timeout``
has passed. This module only moves messages.
"""

from __future__ import annotations

import logging

from fedmap_secure.aggregation import AggregateResult
from fedmap_secure.errors import AbortedError, ConfigError
from fedmap_secure.runtime.channel import RoundPlan
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.server import AggregationServer

log = logging.getLogger(__name__)


class GrpcServerChannel:
    """``ServerChannel`` over a started ``AggregationServer``."""

    def __init__(self, server: AggregationServer, *, final_timeout: float) -> None:
        self.server = server
        self.final_timeout = final_timeout

    def run_round(self, plan: RoundPlan) -> AggregateResult | None:
        if plan.layout is None:
            raise ConfigError("a method that aggregates nothing has no gRPC rounds; use simulate")
        try:
            return self.server.run_round(
                round_index=plan.state.round_index,
                layout=plan.layout,
                context=plan.context,
                announce=plan.opening,
            )
        except AbortedError as exc:  # journalled and culprits excluded by the server
            log.warning("round %d: no update (%s)", plan.state.round_index, exc)
            return None

    def publish_final(self, final: tm.FedMapRound) -> None:
        reached = self.server.publish(final, timeout=self.final_timeout)
        log.info(
            "final state published to %d site(s): %s", len(reached), ", ".join(sorted(reached))
        )
        late = self.server.late_sites
        if not late:
            return
        fetched = self.server.wait_late(self.server.settings.late_timeout)
        missing = sorted(late - fetched)
        log.info(
            "final state fetched by %d of %d late site(s)%s",
            len(fetched),
            len(late),
            f"; not fetched: {', '.join(missing)} (restart the server on its state_dir to "
            "serve them the final state)"
            if missing
            else "",
        )
