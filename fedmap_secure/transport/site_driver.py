"""The gRPC site driver: pull rounds from the server and hand them to the site runtime.

``drive_site`` loops over rounds: ``SiteClient.run_round`` hands each
announcement (after checking the announced context against the one the site
recomputes) to ``handler.handle`` (a ``runtime.SiteRuntime``), whose vector
SecAgg+ masks before it leaves, or whose ``DeclineReason`` is sent as a
decline. It ends after the final announcement. This module only moves
messages: what a site does in a round is ``runtime/site.py``.

Joins that fail (server unreachable, e.g. restarting) are retried for
``patience`` seconds. After a completed round the site asks for the next round;
after an aborted or failed one, for the same index again (a restarted server
re-runs the round it had not completed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.runtime.announcement import context_of
from fedmap_secure.runtime.channel import SiteHandler
from fedmap_secure.secagg.config import SERVER_ID
from fedmap_secure.transport.site import SiteClient, SiteOutcome, SiteReport

log = logging.getLogger(__name__)


def drive_site(
    *,
    client: SiteClient,
    handler: SiteHandler,
    min_round: int = 0,
    patience: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SiteReport]:
    """Take part in every round from ``min_round`` until the final announcement."""
    site = client.site_id
    rounds: list[SiteReport] = []
    next_round, waited = min_round, 0.0
    while True:
        report = client.run_round(handler.handle, min_round=next_round, context_of=context_of)
        rounds.append(report)
        if report.outcome is SiteOutcome.FINAL:
            return rounds
        if report.round_index is None:  # could not join: server unreachable or refusing
            if waited >= patience:
                raise RemoteProtocolError(SERVER_ID, f"cannot join a round: {report.detail}")
            sleep(1.0)
            waited += 1.0
            continue
        waited = 0.0
        done = report.outcome in (SiteOutcome.COMPLETED, SiteOutcome.DECLINED)
        next_round = report.round_index + 1 if done else report.round_index
        if report.outcome is SiteOutcome.COMPLETED:
            log.info(
                "site %s: round %d completed with %d contributor(s)",
                site,
                report.round_index,
                len(report.contributors),
            )
        else:
            log.info(
                "site %s: round %d %s %s",
                site,
                report.round_index,
                report.outcome.value,
                report.detail,
            )
