"""Hostile and failing sites over real mutual-TLS gRPC: the honest sites' round goes on.

n = 4, t = 3: the honest sites a, b and c are enough for a round; site-d (a
genuine certificate) floods, stalls, oversizes, aborts or is dead. Memory is
measured in this process (the server runs in it): the Python heap's peak
(tracemalloc) while the hostile calls are in flight.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import torch
from cryptography import x509

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.config.loader import load_config
from fedmap_secure.errors import AbortedError, ImplausibleAggregateError, LocalProtocolError
from fedmap_secure.runtime.announcement import config_json
from fedmap_secure.secagg import messages as sm
from fedmap_secure.secagg.config import RingSpec
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.round_encoder import RoundEncoder, fixed_point_encoders
from fedmap_secure.transcript.store import SiteRecordWriter, fresh_chain
from fedmap_secure.transport import codec, rpc
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.codec import SiteWireMessage
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb
from fedmap_secure.transport.generated.v1 import service_pb2 as spb
from fedmap_secure.transport.keygen import keygen_consortium
from fedmap_secure.transport.round_floor import RoundFloor
from fedmap_secure.transport.server import AggregationServer, ServerSettings
from fedmap_secure.transport.site import SiteClient, SiteOutcome, SiteReport
from fedmap_secure.transport.state_store import STATE_FILENAME, ServerStateStore
from tests.integration.grpc_harness import (
    CONFIG,
    LAYOUT,
    SITES,
    Consortium,
    exact_inputs,
    harness_client,
    make_deployment,
    open_channel,
    play_round,
    run_deployment_threads,
    running_server,
    start_sites,
)

HONEST = SITES[:3]
SETTINGS = ServerSettings(join_timeout=3.0, stage_timeout=2.0, join_grace=0.5)
MiB = 1 << 20


def _join_bytes(site: str, round_index: int = 0) -> bytes:
    request = tm.JoinRequest(version=PROTOCOL_VERSION, round_index=round_index, sender=site)
    return codec.encode_join(request).SerializeToString()


def _frame(site: str, *, count: int, total: int, data: bytes, index: int = 0) -> bytes:
    header = pb.Header(version=1, session_id=b"\x07" * 32, round=0, sender=site)
    frame = spb.Frame(header=header, index=index, count=count, total_size=total, data=data)
    return frame.SerializeToString()


def _stalled(first: bytes, release: threading.Event) -> Iterator[bytes]:
    """A Submit body that sends its first frame, then nothing until ``release``."""
    yield first
    release.wait(30)


def _wait_joined(server: AggregationServer, sites: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 15
    while not server.joined(sites):
        assert time.monotonic() < deadline, f"{sites} never joined"
        time.sleep(0.02)


def _assert_honest_sum(run_result: object, inputs: dict[str, np.ndarray]) -> None:
    assert run_result is not None
    assert run_result.contributors == frozenset(HONEST)  # type: ignore[attr-defined]
    expected = sum(inputs[s] for s in HONEST)
    np.testing.assert_array_equal(LAYOUT.flatten(run_result.sums), expected)  # type: ignore[attr-defined]


def test_flooding_stalling_and_oversized_calls_cannot_stop_the_honest_round(
    tmp_path: Path,
) -> None:
    consortium = make_deployment(tmp_path)
    inputs = exact_inputs()
    release = threading.Event()
    tracemalloc.start()
    try:
        with running_server(consortium, settings=SETTINGS) as server:
            d = open_channel(server.port, consortium.security("site-d"))
            results: list[object] = []
            driver = threading.Thread(
                target=lambda: results.append(
                    server.run_round(round_index=0, layout=LAYOUT, context=b"ctx")
                ),
                daemon=True,
            )
            driver.start()
            # 20 idle Join calls: one is admitted (site-d's one live Join), 19 refused.
            joins = [d.unary_stream(rpc.JOIN_METHOD)(_join_bytes("site-d"), timeout=30)]
            _wait_joined(server, ("site-d",))
            joins += [
                d.unary_stream(rpc.JOIN_METHOD)(_join_bytes("site-d"), timeout=30)
                for _ in range(19)
            ]
            # 20 Submit calls announcing 2 frames and stalling after the first.
            first = _frame("site-d", count=2, total=2000, data=b"\x00" * 1000)
            submit = d.stream_unary(rpc.SUBMIT_METHOD)
            stalls = [submit.future(_stalled(first, release), timeout=30) for _ in range(20)]
            # Oversized: announced far above the round's layout-derived limit.
            huge = _frame("site-d", count=200, total=200 * MiB, data=b"\x00" * 1000)
            oversized = [submit.future(_stalled(huge, release), timeout=30) for _ in range(5)]
            honest = start_sites(server, consortium, {s: inputs[s] for s in HONEST})
            driver.join(timeout=60)
            honest.join()
            codes = [f.exception().code() for f in stalls if f.exception() is not None]
            big = [f.exception() for f in oversized]
            refused_joins = []
            for call in joins[1:]:
                with pytest.raises(grpc.RpcError) as info:
                    next(iter(call))
                refused_joins.append(info.value)
            release.set()
            for call in joins:
                call.cancel()
            d.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _assert_honest_sum(results[0], inputs)
    assert all(honest.reports[s].outcome is SiteOutcome.COMPLETED for s in HONEST)
    # Over its cap: RESOURCE_EXHAUSTED naming the peer; within its cap: cut off (the server
    # cancels a call still incomplete after stage_timeout, long before the client's 30 s).
    assert len(codes) == 20
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 20 - SETTINGS.submit_per_site
    assert codes.count(grpc.StatusCode.CANCELLED) == SETTINGS.submit_per_site
    for error in refused_joins:
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'site-d'" in error.details()
        assert "live Join" in error.details()
    for error in big:
        assert error is not None
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # 200 MiB announced, 40 calls held open: the server's Python heap never came near it.
    assert peak < 64 * MiB, peak


def test_an_oversized_message_is_refused_from_the_first_frame(tmp_path: Path) -> None:
    consortium = make_deployment(tmp_path)
    inputs = exact_inputs()
    with running_server(consortium, settings=SETTINGS) as server:
        d = open_channel(server.port, consortium.security("site-d"))
        run = start_sites(server, consortium, {s: inputs[s] for s in HONEST})
        driver_out: list[object] = []
        driver = threading.Thread(
            target=lambda: driver_out.append(
                server.run_round(round_index=0, layout=LAYOUT, context=b"ctx")
            ),
            daemon=True,
        )
        driver.start()
        _wait_joined(server, HONEST)
        # 64 KiB is far above the limit of any message of the key stage (layout of 7 values).
        frame = _frame("site-d", count=1, total=64 << 10, data=b"\x00" * (64 << 10))
        with pytest.raises(grpc.RpcError) as info:
            d.stream_unary(rpc.SUBMIT_METHOD)(iter([frame]), timeout=10)
        driver.join(timeout=30)
        run.join()
        d.close()
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "exceeds the limit" in info.value.details()
    _assert_honest_sum(driver_out[0], inputs)


class _BadDealer(SiteClient):
    """Commits to another self-mask secret than the one it shares: the round cannot unmask it."""

    def _send(self, message: SiteWireMessage) -> None:
        if isinstance(message, sm.ShareKeys):
            message = dataclasses.replace(
                message, self_mask_commitment=bytes(len(message.self_mask_commitment))
            )
        super()._send(message)


def _run_bad_dealer(server: AggregationServer, consortium: Consortium) -> SiteOutcome:
    channel = open_channel(server.port, consortium.security("site-d"))
    client = _BadDealer(
        channel=channel,
        site_id="site-d",
        identity=consortium.identities["site-d"],
        roster=consortium.roster,
        config=CONFIG,
        round_timeout=30.0,
    )
    try:
        return client.run_round(lambda _: exact_inputs()["site-d"]).outcome
    finally:
        channel.close()


def test_a_site_that_aborts_a_round_is_excluded_and_the_next_round_completes(
    tmp_path: Path,
) -> None:
    consortium = make_deployment(tmp_path)
    inputs = exact_inputs()
    with running_server(consortium, settings=SETTINGS) as server:
        outcome: list[SiteOutcome] = []
        bad = threading.Thread(target=lambda: outcome.append(_run_bad_dealer(server, consortium)))
        bad.start()
        first = play_round(server, consortium, {s: inputs[s] for s in HONEST})
        bad.join(timeout=30)
        assert isinstance(first.error, AbortedError)
        assert "self-mask secret of 'site-d'" in str(first.error)
        assert outcome == [SiteOutcome.ABORTED]
        record = server.exclusion.aborted[-1]
        assert (record.round_index, record.culprits) == (0, ("site-d",))
        # The aborted index is never reused ...
        with pytest.raises(LocalProtocolError, match="already announced"):
            server.run_round(round_index=0, layout=LAYOUT, context=b"again")
        # ... and the culprit is refused while the honest sites complete the next round.
        second = play_round(server, consortium, inputs, round_index=1)
    assert second.error is None
    _assert_honest_sum(second.result, inputs)
    assert second.reports["site-d"].outcome is SiteOutcome.FAILED
    assert "aborted round 0" in second.reports["site-d"].detail


def test_a_dead_site_costs_each_round_the_grace_not_the_join_timeout(tmp_path: Path) -> None:
    """site-d never connects; join_timeout is 120 s, the grace 0.3 s: three rounds complete
    (each would otherwise wait the whole join timeout, far beyond the sites' 30 s deadline)."""
    consortium = make_deployment(tmp_path)
    inputs = exact_inputs()
    settings = ServerSettings(join_timeout=120.0, stage_timeout=5.0, join_grace=0.3)
    outcomes = []
    with running_server(consortium, settings=settings) as server:
        for r in range(3):
            run = play_round(server, consortium, {s: inputs[s] for s in HONEST}, round_index=r)
            assert run.error is None
            _assert_honest_sum(run.result, inputs)
            outcomes.append({s: run.reports[s].outcome for s in HONEST})
    assert outcomes == [{s: SiteOutcome.COMPLETED for s in HONEST}] * 3


def test_a_revoked_certificate_is_refused_on_every_call(tmp_path: Path) -> None:
    consortium = make_deployment(tmp_path)
    assert consortium.deployment is not None
    pem = consortium.deployment.site_tls("site-d").certificate.read_bytes()
    serial = format(x509.load_pem_x509_certificate(pem).serial_number, "X")
    settings = dataclasses.replace(SETTINGS, revoked=frozenset({serial}))
    inputs = exact_inputs()
    with running_server(consortium, settings=settings) as server:
        run = play_round(server, consortium, inputs)
        d = open_channel(server.port, consortium.security("site-d"))
        frame = _frame("site-d", count=1, total=10, data=b"\x00" * 10)
        with pytest.raises(grpc.RpcError) as info:
            d.stream_unary(rpc.SUBMIT_METHOD)(iter([frame]), timeout=10)
        d.close()
    assert run.error is None
    _assert_honest_sum(run.result, inputs)
    assert run.reports["site-d"].outcome is SiteOutcome.FAILED
    assert "certificate revoked" in run.reports["site-d"].detail
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "'site-d': certificate revoked" in info.value.details()


class _CorruptEncoder:
    """A corrupt site's encoder: an honest encoding plus a value no honest site can send."""

    def __init__(self, honest: RoundEncoder) -> None:
        self._honest = honest

    @property
    def ring(self) -> RingSpec | None:
        return self._honest.ring

    def encode(
        self, vector: np.ndarray, *, random_bytes: Callable[[int], bytes]
    ) -> npt.NDArray[np.uint64]:
        out = self._honest.encode(vector, random_bytes=random_bytes)
        assert isinstance(self._honest, Quantizer)
        ring = np.uint64((1 << self._honest.bits) - 1)
        out[0] = (out[0] + np.uint64(int(20 * 2.0 ** self._honest.fractional_bits[0]))) & ring
        return out

    def decode(self, total: npt.NDArray[np.uint64]) -> tuple[np.ndarray, int]:
        raise AssertionError("a site never decodes")


def test_an_impossible_sum_is_rejected_and_the_next_round_completes(tmp_path: Path) -> None:
    """site-d adds 20 to a coordinate whose bound is 8: the sum of 3 sites (a, b, d; c is
    dead) cannot exceed 24, and 24.75 does not wrap in the ring (room for 4 x 8)."""
    consortium = make_deployment(tmp_path)
    inputs = exact_inputs()
    honest_encoders = fixed_point_encoders(n_max=CONFIG.n, bits=CONFIG.bits)

    def corrupt(round_index: int, layout: VectorLayout, context: bytes) -> RoundEncoder:
        return _CorruptEncoder(honest_encoders(round_index, layout, context))

    with running_server(consortium, settings=SETTINGS) as server:
        channel = open_channel(server.port, consortium.security("site-d"))
        client = harness_client(
            consortium,
            "site-d",
            channel,
            encoders=corrupt,
        )
        bad = threading.Thread(target=lambda: client.run_round(lambda _: inputs["site-d"]))
        bad.start()
        first = play_round(server, consortium, {s: inputs[s] for s in ("site-a", "site-b")})
        bad.join(timeout=30)
        channel.close()
        assert isinstance(first.error, ImplausibleAggregateError)
        assert "theta[0]" in str(first.error)
        assert server.exclusion.aborted[-1].round_index == 0
        second = play_round(server, consortium, {s: inputs[s] for s in HONEST}, round_index=1)
    assert second.error is None
    _assert_honest_sum(second.result, inputs)


def _recording_sites(
    server: AggregationServer, consortium: Consortium, state: Path, round_index: int
) -> dict[str, SiteReport]:
    """Every site with its durable round floor and append-only records under ``state``."""
    inputs = exact_inputs()
    reports: dict[str, SiteReport] = {}

    def site_main(site: str) -> None:
        channel = open_channel(server.port, consortium.security(site))
        client = harness_client(
            consortium,
            site,
            channel,
            site_records=SiteRecordWriter(state / site),
            round_floor=RoundFloor(state / site),
        )
        reports[site] = client.run_round(lambda _: inputs[site], min_round=round_index)
        channel.close()

    threads = [threading.Thread(target=site_main, args=(s,)) for s in SITES]
    for t in threads:
        t.start()
    result = server.run_round(round_index=round_index, layout=LAYOUT, context=b"ctx")
    assert result.contributors == frozenset(SITES)
    for t in threads:
        t.join(timeout=30)
    return reports


def test_a_replayed_round_is_refused_by_every_site_and_records_never_change(
    tmp_path: Path,
) -> None:
    consortium = make_deployment(tmp_path / "pki")
    state = tmp_path / "sites"
    with running_server(
        consortium, settings=SETTINGS, transcripts=fresh_chain(tmp_path / "server")
    ) as server:
        reports = _recording_sites(server, consortium, state, 0)
    assert {r.outcome for r in reports.values()} == {SiteOutcome.COMPLETED}
    files = sorted(state.glob("*/site-records/*/round-*.json"))
    assert len(files) == len(SITES)
    before = {f: f.read_bytes() for f in files}
    # The server replays round 0 from a copy of its state before the round (a fresh chain).
    inputs = exact_inputs()
    replay = dataclasses.replace(SETTINGS, join_grace=5.0)
    with running_server(
        consortium, settings=replay, transcripts=fresh_chain(tmp_path / "replay")
    ) as server:
        out: dict[str, SiteReport] = {}

        def site_main(site: str) -> None:
            channel = open_channel(server.port, consortium.security(site))
            client = harness_client(
                consortium,
                site,
                channel,
                site_records=SiteRecordWriter(state / site),
                round_floor=RoundFloor(state / site),
            )
            out[site] = client.run_round(lambda _: inputs[site])
            channel.close()

        threads = [threading.Thread(target=site_main, args=(s,)) for s in SITES]
        for t in threads:
            t.start()
        with pytest.raises(AbortedError, match="only 0 sites advertised keys"):
            server.run_round(round_index=0, layout=LAYOUT, context=b"ctx")
        for t in threads:
            t.join(timeout=30)
    for site in SITES:
        assert out[site].outcome is SiteOutcome.FAILED
        assert "already played round 0" in out[site].detail
    assert {
        f: f.read_bytes() for f in sorted(state.glob("*/site-records/*/round-*.json"))
    } == before


def test_a_deployment_with_a_dead_site_runs_at_the_pace_of_the_grace(tmp_path: Path) -> None:
    """`fedmap-secure server` + 3 of the roster's 4 `site`s (mTLS, CSV): the fourth never
    starts. join = 300 s, join_grace = 0.5 s: both rounds and the final publication finish
    within the threads' 120 s budget only because nobody waits the join timeout for it."""
    from tests.integration.test_grpc_deployment import _free_port, _write_csvs

    torch.set_num_threads(1)
    sites, features = _write_csvs(tmp_path)
    keygen_consortium(tmp_path / "pki", sites)
    port = _free_port()
    consortium = (
        '[consortium]\nroster = "pki/roster.json"\ndropout_fraction = 0.25\n'
        "corrupt_fraction = 0.0\n"
    )
    (tmp_path / "run.toml").write_text(
        "[simulation]\nrounds = 2\nfinetune_rounds = 1\n[training]\nepochs = 1\n"
    )
    (tmp_path / "server.toml").write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "server-state"\n'
        f'run_config = "run.toml"\nfeatures = {features}\n'
        '[tls]\nca = "pki/ca.pem"\ncertificate = "pki/server/server.pem"\n'
        'private_key = "pki/server/server.key"\n'
        "[timeouts]\njoin = 300\nstage = 20\njoin_grace = 0.5\n" + consortium
    )
    alive = sites[:3]
    for site in alive:
        (tmp_path / f"{site}.toml").write_text(
            f'[site]\nid = "{site}"\nserver = "localhost:{port}"\n'
            f'identity = "pki/sites/{site}/identity.pem"\nstate_dir = "state/{site}"\n'
            f'data = "data/{site}"\n'
            f'[tls]\nca = "pki/ca.pem"\ncertificate = "pki/sites/{site}/site.pem"\n'
            f'private_key = "pki/sites/{site}/site.key"\n' + consortium
        )
    errors = run_deployment_threads(
        tmp_path / "server.toml", [tmp_path / f"{s}.toml" for s in alive], timeout=120
    )
    assert errors == []
    store = ServerStateStore(
        tmp_path / "server-state" / STATE_FILENAME,
        run_config_json=config_json(load_config(tmp_path / "run.toml")),
    )
    assert [m["contributors"] for m in store.history()] == [3, 3]
    transcripts = sorted((tmp_path / "server-state" / "transcripts").glob("round-*.json"))
    assert [p.name for p in transcripts] == ["round-0000.json", "round-0001.json"]
