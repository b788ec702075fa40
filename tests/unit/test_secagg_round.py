"""Whole rounds through ``SecureAggregator`` and the session APIs."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fedmap_secure.aggregation import Aggregator, Field, PlainSum, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.prg import Workers
from fedmap_secure.errors import AbortedError, ConfigError, LocalProtocolError
from fedmap_secure.secagg.config import DEFAULT_BITS
from fedmap_secure.secagg.inprocess import DropPoint, SecureAggregator
from fedmap_secure.secagg.masking import RunningSum
from fedmap_secure.secagg.messages import MaskedInput, UnmaskResponse
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.stages import ServerStage

from .secagg_harness import Round, expected_sum

LAYOUT = VectorLayout(
    (Field(name="theta", length=6, bound=4.0), Field(name="w", length=1, bound=1.0))
)
SITES = [f"h{i}" for i in range(6)]


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s: np.concatenate([rng.uniform(-4, 4, 6), [rng.uniform(0, 1)]]) for s in SITES}


def _error_bound(summands: int) -> np.ndarray:
    """The documented decoding error bound at the default 32-bit ring (quantize.error_bound)."""
    return Quantizer.auto(LAYOUT, n_max=len(SITES), bits=DEFAULT_BITS).error_bound(summands)


def _aggregator(**kwargs: object) -> SecureAggregator:
    return SecureAggregator.simulated(
        SITES,
        dropout_fraction=0.3,
        corrupt_fraction=0.0,
        random_bytes=DeterministicRandom(b"agg"),
        **kwargs,  # type: ignore[arg-type]
    )


def test_secure_sum_matches_plain_sum() -> None:
    inputs = _inputs()
    secure = _aggregator().aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"g")
    plain = PlainSum().aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"g")
    assert secure.contributors == plain.contributors
    bound = LAYOUT.unflatten(_error_bound(len(inputs)))
    for name in LAYOUT.names:
        assert np.all(np.abs(secure.sums[name] - plain.sums[name]) <= bound[name])


@pytest.mark.parametrize("point", list(DropPoint))
def test_one_site_dropping_at_each_stage(point: DropPoint) -> None:
    inputs = _inputs(1)
    result = _aggregator(dropouts={"h2": point}).aggregate(
        round_index=3, layout=LAYOUT, inputs=inputs, context=b"g"
    )
    included = set(SITES)
    if point in (DropPoint.BEFORE_KEYS, DropPoint.AFTER_KEYS, DropPoint.AFTER_SHARES):
        included.discard("h2")
    assert result.contributors == frozenset(included)
    exact = sum(inputs[s] for s in included)
    assert np.all(np.abs(LAYOUT.flatten(result.sums) - exact) <= _error_bound(len(included)))


def test_absent_sites_are_recovered_and_too_few_abort() -> None:
    inputs = {s: v for s, v in _inputs(2).items() if s not in ("h0", "h5")}
    agg = _aggregator()
    result = agg.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"g")
    assert result.contributors == frozenset(inputs)
    few = {s: inputs[s] for s in ("h1", "h2")}
    with pytest.raises(AbortedError, match="masked inputs"):
        agg.aggregate(round_index=1, layout=LAYOUT, inputs=few, context=b"g")


def test_clipped_coordinates_are_reported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    inputs = _inputs(3)
    inputs["h1"][0] = 50.0
    with caplog.at_level(logging.WARNING):
        result = _aggregator().aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"g")
    assert result.clipped_coordinates == 1
    assert "clipped" in caplog.text
    assert "h1" not in caplog.text


def test_describe_names_protocol_and_parameters() -> None:
    info = _aggregator().describe()
    assert info["protocol"] == "SecAgg (Bonawitz et al. 2017)"
    assert (info["n"], info["k"], info["t"], info["bits"]) == (6, 5, 4, DEFAULT_BITS)
    big = SecureAggregator.simulated(
        [f"x{i}" for i in range(40)], dropout_fraction=0.05, corrupt_fraction=0.05
    )
    assert big.describe()["protocol"] == "SecAgg+ (Bell et al. 2020)"


def test_sparse_round_with_34_sites() -> None:
    sites = [f"x{i:02d}" for i in range(34)]
    agg = SecureAggregator.simulated(
        sites,
        dropout_fraction=0.1,
        corrupt_fraction=0.05,
        random_bytes=DeterministicRandom(b"big"),
        dropouts={"x03": DropPoint.AFTER_SHARES, "x17": DropPoint.DURING_UNMASK},
    )
    assert agg.config.k < 33
    layout = VectorLayout((Field(name="v", length=2, bound=100.0),))
    inputs = {s: np.array([float(i), 1.0]) for i, s in enumerate(sites)}
    result = agg.aggregate(round_index=0, layout=layout, inputs=inputs, context=b"g")
    assert result.contributors == frozenset(sites) - {"x03"}
    assert result.sums["v"].tolist() == [sum(range(34)) - 3.0, 33.0]


def test_inputs_from_unknown_sites_and_bad_schedules_are_refused() -> None:
    with pytest.raises(ConfigError, match="not on the roster"):
        _aggregator().aggregate(
            round_index=0, layout=LAYOUT, inputs={"nobody": np.zeros(7)}, context=b"g"
        )
    with pytest.raises(ConfigError, match="unknown sites"):
        _aggregator(dropouts={"nobody": DropPoint.AFTER_KEYS})


def test_session_ids_bind_round_and_context() -> None:
    a, b, c = Round(round_index=0), Round(round_index=1), Round(round_index=0, context=b"other")
    assert len({a.server.setup_id, b.server.setup_id, c.server.setup_id}) == 3
    out = a.run()
    assert np.array_equal(out.total, expected_sum(a.sites))
    assert a.clients["s0"].session_id == a.server.session_id


def test_masked_input_alone_looks_nothing_like_the_input() -> None:
    r = Round()
    deliveries = r.share(r.advertise())
    r.to_clients(deliveries)
    x = np.array([1, 2, 3, 0], dtype=np.uint64)
    y = r.clients["s0"].submit_input(x)
    assert isinstance(y, MaskedInput)
    assert not np.any(y.masked == x)
    assert not y.masked.flags.writeable


def test_submit_input_checks_shape_and_range() -> None:
    r = Round()
    r.to_clients(r.share(r.advertise()))
    with pytest.raises(LocalProtocolError, match="length 4"):
        r.clients["s0"].submit_input(np.zeros(3, dtype=np.uint64))


def test_running_sum_wraps_modulo_two_to_the_bits() -> None:
    total = RunningSum(2, 16)
    total.add(np.array([65535, 1], dtype=np.uint64))
    total.add(np.array([2, 1], dtype=np.uint64))
    assert total.value().tolist() == [1, 2]
    total.add(np.array([3, 3], dtype=np.uint64), -1)
    assert total.value().tolist() == [65534, 65535]


def test_secure_aggregator_satisfies_the_aggregator_protocol() -> None:
    aggregator: Aggregator = _aggregator()  # checked by mypy
    assert aggregator.describe()["k"] == 5


def test_too_few_unmask_responses_abort_and_no_secret_reaches_t_shares() -> None:
    r = Round(n=5, t=3)
    requests = r.sign(r.mask(r.share(r.advertise())))
    responses = r.to_clients(requests, ["s0", "s1"])  # three sites vanish during unmask
    r.to_server(responses)
    per_secret: dict[tuple[str, str], int] = {}
    for response in responses.values():
        assert isinstance(response, UnmaskResponse)
        for share in response.self_mask_shares:
            per_secret[(share.owner, "b")] = per_secret.get((share.owner, "b"), 0) + 1
        for share in response.mask_key_shares:
            per_secret[(share.owner, "sk")] = per_secret.get((share.owner, "sk"), 0) + 1
    assert max(per_secret.values()) < r.config.t
    with pytest.raises(AbortedError, match="unmask responses"):
        r.server.finish()
    assert r.server.stage is ServerStage.ABORTED


def test_sessions_refuse_a_negative_round() -> None:
    with pytest.raises(ConfigError, match="round_index"):
        Round(round_index=-1)


def test_a_server_with_workers_unmasks_the_same_sum() -> None:
    with ThreadPoolExecutor(2) as pool:
        workers = Workers(executor=pool, count=3)
        outputs = []
        for chosen in (None, workers):
            rnd = Round(n=6, t=4, workers=chosen)
            alive = rnd.sites[:5]  # s5 drops after sharing keys: its pairwise masks are removed
            requests = rnd.mask(rnd.share(rnd.advertise()), alive)
            outputs.append(rnd.unmask(rnd.sign(requests)))
    serial, threaded = outputs
    assert threaded.dropped == serial.dropped == frozenset({"s5"})
    assert np.array_equal(threaded.total, serial.total)
    assert np.array_equal(threaded.total, expected_sum(alive))


def test_every_session_of_a_round_shares_the_servers_neighbour_graph() -> None:
    from fedmap_secure.secagg.client import ClientSession
    from fedmap_secure.secagg.server import ServerSession

    agg = SecureAggregator.simulated(
        [f"g{i:02d}" for i in range(40)], dropout_fraction=0.05, corrupt_fraction=0.05
    )
    layout = LAYOUT
    server = ServerSession(
        roster=agg.roster, config=agg.config, layout=layout, round_index=2, context=b"c"
    )
    identities = agg._identities
    clients = [
        ClientSession(
            site_id=s,
            identity=identities[s],
            roster=agg.roster,
            config=agg.config,
            layout=layout,
            round_index=2,
            context=b"c",
        )
        for s in sorted(identities)[:5]
    ]
    assert all(c._graph is server._graph for c in clients)


def test_inputs_from_a_site_off_the_roster_are_refused_by_name() -> None:
    inputs = _inputs() | {"intruder": np.zeros(LAYOUT.size)}
    with pytest.raises(ConfigError, match=r"round 3: .*not on the roster \['intruder'\]"):
        _aggregator().aggregate(round_index=3, layout=LAYOUT, inputs=inputs, context=b"g")
