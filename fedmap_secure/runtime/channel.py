"""The abstract message channels between the server runtime and the site runtimes.

The server runtime decides *what* a round is (``RoundPlan``: configuration,
state, layout, context) and computes the next state from the sums; a
``ServerChannel`` carries the announcement to the sites and brings back the
aggregate (in-process: ``runtime.inprocess.InProcessChannel``; gRPC:
``transport.fedmap_channel.GrpcServerChannel``). On the site side the channel
is just ``SiteHandler.handle``: every transport hands each announcement to a
``SiteRuntime`` and carries its answer back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fedmap_secure.aggregation import AggregateResult, FloatVector, VectorLayout
from fedmap_secure.fedmap.methods import GlobalState
from fedmap_secure.runtime.announcement import announcement
from fedmap_secure.transport import messages as tm

Answer = FloatVector | tm.DeclineReason | None
"""A site's answer to an announcement: its vector, a reason to decline, None (final)."""


@dataclass(frozen=True, kw_only=True)
class RoundPlan:
    """One training round as the server runtime announces it."""

    config_text: str
    state: GlobalState
    layout: VectorLayout | None
    context: bytes

    def opening(self, setup: tm.SecAggSetup) -> tm.FedMapRound:
        """The round's announcement with the transport's SecAgg setup."""
        return announcement(config_text=self.config_text, state=self.state, setup=setup)


class ServerChannel(Protocol):
    """What the server runtime needs from a transport."""

    def run_round(self, plan: RoundPlan) -> AggregateResult | None:
        """Announce ``plan`` and aggregate the answers; None: nothing was aggregated
        (every site declined, or the transport gave up on the round and the model
        stays unchanged)."""

    def publish_final(self, final: tm.FedMapRound) -> None:
        """Hand the final announcement to every site (fine-tuning, evaluation)."""


class SiteHandler(Protocol):
    """The site side: a ``SiteRuntime`` answering announcements."""

    def handle(self, opening: tm.RoundOpening) -> Answer: ...
