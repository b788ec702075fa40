"""Sites that die or go silent at each stage, over real gRPC (n = 4, t = q = 3)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from fedmap_secure.errors import AbortedError
from fedmap_secure.transport.codec import SiteWireMessage
from fedmap_secure.transport.site import SiteOutcome
from tests.integration.grpc_harness import (
    LAYOUT,
    SITES,
    RoundRun,
    SiteKilledError,
    exact_inputs,
    kill_before,
    plain_consortium,
    play_round,
    running_server,
    start_sites,
)

STAGES = ["AdvertiseKeys", "ShareKeys", "MaskedInput", "ConsistencySignature", "UnmaskResponse"]
# Killed before sending its masked input: not in the sum. Killed later: its input is in the sum
# (it is in U3) and its self mask is removed with the shares its holders reveal.
INPUT_INCLUDED = {"ConsistencySignature", "UnmaskResponse"}


@pytest.mark.parametrize("stage", STAGES)
def test_one_site_killed_round_completes(stage: str) -> None:
    consortium = plain_consortium()
    inputs = exact_inputs()
    with running_server(consortium) as server:
        run = play_round(server, consortium, inputs, hooks={"site-b": kill_before(stage)})
    assert run.error is None
    assert run.result is not None
    assert run.killed == ["site-b"]
    included = set(SITES) if stage in INPUT_INCLUDED else set(SITES) - {"site-b"}
    assert run.result.contributors == frozenset(included)
    np.testing.assert_array_equal(
        LAYOUT.flatten(run.result.sums), sum(inputs[s] for s in sorted(included))
    )
    for site in set(SITES) - {"site-b"}:
        assert run.reports[site].outcome is SiteOutcome.COMPLETED


@pytest.mark.parametrize("stage", STAGES)
def test_two_sites_killed_round_aborts_without_unmasking(stage: str) -> None:
    consortium = plain_consortium()
    sent: dict[str, list[str]] = {s: [] for s in SITES}
    lock = threading.Lock()

    def recorder(site: str) -> Callable[[SiteWireMessage], None]:
        kill = kill_before(stage) if site in ("site-a", "site-c") else None

        def hook(message: SiteWireMessage) -> None:
            if kill is not None:
                kill(message)
            with lock:
                sent[site].append(type(message).__name__)

        return hook

    with running_server(consortium) as server:
        run = play_round(server, consortium, exact_inputs(), hooks={s: recorder(s) for s in SITES})
    assert isinstance(run.error, AbortedError)
    assert run.result is None
    assert sorted(run.killed) == ["site-a", "site-c"]
    for site in ("site-b", "site-d"):
        assert run.reports[site].outcome is SiteOutcome.ABORTED
        assert "only 2" in run.reports[site].detail
    if stage != "UnmaskResponse":
        # The abort came before the unmask stage: no site revealed any share.
        assert all("UnmaskResponse" not in names for names in sent.values())


def test_silent_site_misses_the_deadline_and_is_dropped() -> None:
    consortium = plain_consortium()
    inputs = exact_inputs()
    release = threading.Event()

    def stall(message: SiteWireMessage) -> None:
        if type(message).__name__ == "MaskedInput":
            release.wait(10)  # connected but silent past the 2 s stage deadline

    with running_server(consortium) as server:
        run = play_round(server, consortium, inputs, hooks={"site-d": stall}, join_sites=False)
        release.set()
        run.join()
    assert run.result is not None
    assert run.result.contributors == frozenset(SITES) - {"site-d"}
    assert run.reports["site-d"].outcome is SiteOutcome.FAILED
    assert (
        "DEADLINE_EXCEEDED" in run.reports["site-d"].detail
        or "not open" in run.reports["site-d"].detail
    )


def test_site_restarted_mid_round_rejoins_the_next_round() -> None:
    consortium = plain_consortium()
    inputs = exact_inputs()
    restarted: list[RoundRun] = []

    def crash_and_restart(message: SiteWireMessage) -> None:
        if type(message).__name__ == "ShareKeys":
            # The "new process" starts once the old one is gone (its Join ended: the server
            # admits one live Join per site) and asks for round 0 again; round 0 no longer
            # admits it.
            def restart() -> None:
                deadline = time.monotonic() + 10
                while server.joined(("site-b",)) and time.monotonic() < deadline:
                    time.sleep(0.02)
                restarted.append(start_sites(server, consortium, {"site-b": inputs["site-b"]}))

            threading.Thread(target=restart, daemon=True).start()
            raise SiteKilledError("ShareKeys")

    with running_server(consortium) as server:
        first = play_round(server, consortium, inputs, hooks={"site-b": crash_and_restart})
        others = {s: inputs[s] for s in SITES if s != "site-b"}
        second = play_round(server, consortium, others, round_index=1)
        restarted[0].join()
    assert first.result is not None
    assert first.result.contributors == frozenset(SITES) - {"site-b"}
    assert second.result is not None
    assert second.result.contributors == frozenset(SITES)
    report = restarted[0].reports["site-b"]
    assert report.round_index == 1
    assert report.outcome is SiteOutcome.COMPLETED
