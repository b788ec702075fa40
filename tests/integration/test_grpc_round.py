"""A full secure-aggregation round over real gRPC equals the in-process round."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.aggregation import AggregateResult, FloatVector
from fedmap_secure.errors import AbortedError
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.site import SiteOutcome
from tests.integration.grpc_harness import (
    CONFIG,
    CONTEXT,
    LAYOUT,
    SITES,
    Consortium,
    exact_inputs,
    make_deployment,
    plain_consortium,
    play_round,
    running_server,
    start_sites,
)


def _in_process(consortium: Consortium, inputs: Mapping[str, FloatVector]) -> AggregateResult:
    agg = SecureAggregator(identities=consortium.identities, config=CONFIG)
    return agg.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=CONTEXT)


@pytest.mark.parametrize("tls", [True, False], ids=["mtls", "insecure"])
def test_four_sites_sum_equals_in_process(tmp_path: Path, tls: bool) -> None:
    consortium = make_deployment(tmp_path) if tls else plain_consortium()
    inputs = exact_inputs()
    with running_server(consortium) as server:
        run = play_round(server, consortium, inputs)
    assert run.error is None
    assert run.result is not None
    expected = _in_process(consortium, inputs)
    assert run.result.contributors == frozenset(SITES) == expected.contributors
    for name in LAYOUT.names:
        np.testing.assert_array_equal(run.result.sums[name], expected.sums[name])
    flat = LAYOUT.flatten(run.result.sums)
    np.testing.assert_array_equal(flat, sum(inputs.values()))
    assert {r.outcome for r in run.reports.values()} == {SiteOutcome.COMPLETED}


def test_a_declining_site_is_a_dropout(tmp_path: Path) -> None:
    consortium = plain_consortium()
    inputs: dict[str, object] = dict(exact_inputs())
    inputs["site-c"] = tm.DeclineReason.BUDGET_EXHAUSTED
    with running_server(consortium) as server:
        run = play_round(server, consortium, inputs)  # type: ignore[arg-type]
    assert run.result is not None
    assert run.result.contributors == frozenset(SITES) - {"site-c"}
    assert run.reports["site-c"].outcome is SiteOutcome.DECLINED
    expected = sum(v for s, v in exact_inputs().items() if s != "site-c")
    np.testing.assert_array_equal(LAYOUT.flatten(run.result.sums), expected)


GAMMA = np.linspace(-1.0, 1.0, 5)


def _digest(gamma: np.ndarray) -> bytes:
    return hashlib.sha256(gamma.astype("<f8").tobytes()).digest()


def _announce(gamma: np.ndarray) -> Callable[[tm.SecAggSetup], tm.RoundOpening]:
    def wrap(setup: tm.SecAggSetup) -> tm.RoundOpening:
        return tm.FedMapRound(
            version=setup.version,
            session_id=setup.session_id,
            round_index=setup.round_index,
            sender=setup.sender,
            gamma=gamma,
            psi=None,
            config_json="{}",
            setup=setup,
        )

    return wrap


def _context_of(opening: tm.RoundOpening) -> bytes:
    assert isinstance(opening, tm.FedMapRound)
    return _digest(opening.gamma)


def test_fedmap_announcement_with_verified_context() -> None:
    consortium = plain_consortium()
    with running_server(consortium) as server:
        run = play_round(
            server,
            consortium,
            exact_inputs(),
            round_index=3,
            context=_digest(GAMMA),
            announce=_announce(GAMMA),
            context_of=_context_of,
        )
    assert run.result is not None
    assert run.result.contributors == frozenset(SITES)
    for opening in run.openings.values():
        assert isinstance(opening, tm.FedMapRound)
        np.testing.assert_array_equal(opening.gamma, GAMMA)


def test_sites_refuse_a_model_that_is_not_the_bound_one() -> None:
    consortium = plain_consortium()
    with running_server(consortium) as server:
        run = play_round(
            server,
            consortium,
            exact_inputs(),
            context=_digest(GAMMA),
            announce=_announce(GAMMA + 1.0),  # shows another model than the one bound
            context_of=_context_of,
        )
    assert isinstance(run.error, AbortedError)
    for report in run.reports.values():
        assert report.outcome is SiteOutcome.FAILED
        assert "does not match the announced model" in report.detail


def test_final_state_is_published_to_every_site() -> None:
    consortium = plain_consortium()
    final = tm.FedMapRound(
        version=1,
        session_id=_digest(GAMMA),
        round_index=7,
        sender="@server",
        gamma=GAMMA,
        psi=np.ones(2),
        config_json="{}",
        setup=None,
        final=True,
    )
    with running_server(consortium) as server:
        sites = start_sites(server, consortium, exact_inputs(), round_index=7)
        reached = server.publish(final, timeout=10)
        sites.join()
    assert reached == frozenset(SITES)
    for site in SITES:
        assert sites.reports[site].outcome is SiteOutcome.FINAL
        opening = sites.openings[site]
        assert isinstance(opening, tm.FedMapRound)
        assert opening.final
        np.testing.assert_array_equal(opening.gamma, GAMMA)
