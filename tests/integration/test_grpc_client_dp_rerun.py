"""Over real gRPC: a server re-running round 0 gets no second noisy encoding from any site.

The server here charges nothing and runs round index 0 again from a fresh
server process (a hardened server refuses a replayed round index itself; a
malicious one restarts with empty state); each site's encoder
factory is the one a deployed site uses (its pinned ``[client_dp]`` plus its
own durable record in its state folder), so every site refuses the re-run
before encoding anything.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from fedmap_secure.client_dp.rounds import ClientDpPlanner
from fedmap_secure.client_dp.site_guard import SiteNoiseGuard
from fedmap_secure.config.privacy import ClientDpSettings
from fedmap_secure.errors import FedMapError
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.transport.client_dp_pin import PinnedClientDp
from fedmap_secure.transport.server import AggregationServer
from fedmap_secure.transport.site import SiteOutcome, SiteReport
from tests.integration.grpc_harness import (
    CONTEXT,
    FAST,
    SITES,
    harness_client,
    open_channel,
    plain_consortium,
)
from tests.integration.test_grpc_client_dp import LAYOUT, _inputs

SECAGG = SecAggConfig.for_threat_model(n=4, dropout_fraction=0.25, corrupt_fraction=0.0, bits=64)
SETTINGS = ClientDpSettings(enabled=True, epsilon=4.0, delta=1e-3)


def test_sites_refuse_a_rerun_of_round_0_over_grpc(tmp_path: Path) -> None:
    consortium = plain_consortium()
    pinned = PinnedClientDp(settings=SETTINGS, rounds=2)
    guards: dict[str, SiteNoiseGuard] = {s: pinned.open_guard(tmp_path / s, s) for s in SITES}
    planner = ClientDpPlanner(SETTINGS, rounds=2, secagg=SECAGG)
    planner.check_layout(LAYOUT)

    def new_server() -> AggregationServer:
        return AggregationServer(
            roster=consortium.roster,
            config=SECAGG,
            security=consortium.security(),
            settings=FAST,
            encoders=planner.round_encoder,  # charges nothing: the sites must protect themselves
        ).start()

    inputs = _inputs(np.random.default_rng(3))

    def one_round() -> tuple[object, dict[str, SiteReport]]:
        reports: dict[str, SiteReport] = {}
        server = new_server()

        def site_main(site: str) -> None:
            channel = open_channel(server.port, consortium.security(site))
            client = harness_client(
                consortium,
                site,
                channel,
                config=SECAGG,
                encoders=pinned.encoders(SECAGG, guards[site]),
            )
            try:
                reports[site] = client.run_round(lambda _opening: inputs[site])
            finally:
                channel.close()

        threads = [threading.Thread(target=site_main, args=(s,), daemon=True) for s in SITES]
        for t in threads:
            t.start()
        try:
            try:
                result: object = server.run_round(round_index=0, layout=LAYOUT, context=CONTEXT)
            except FedMapError as exc:  # the re-run aborts (or is refused): no one sent
                result = exc
        finally:
            for t in threads:
                t.join(timeout=30)
            server.stop(grace=0.5)
        return result, reports

    first, reports = one_round()
    assert not isinstance(first, Exception), first
    assert all(r.outcome is not SiteOutcome.FAILED for r in reports.values())
    second, again = one_round()
    assert isinstance(second, Exception)
    assert all(r.outcome is SiteOutcome.FAILED for r in again.values())
    assert all("already sent a noisy" in (r.detail or "") for r in again.values())
    for guard in guards.values():  # exactly one noisy encoding of round 0 per site, on disk
        assert guard.sent_rounds() == {0}
        assert len(guard.ledger.history()) == 1
