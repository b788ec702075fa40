"""Round transcripts: a real in-process run verifies; every kind of tampering is caught."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.labels import LABEL_CONSISTENCY, LABEL_KEY_ADVERTISEMENT
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import TranscriptError
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import DropPoint
from fedmap_secure.transcript.aggregator import RecordingSecureAggregator
from fedmap_secure.transcript.binding import bound_context_hash
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.records import (
    Direction,
    Reveal,
    RoundTranscript,
    ShareKind,
)
from fedmap_secure.transcript.site_record import SiteRecord, cross_check
from fedmap_secure.transcript.store import (
    SiteRecordWriter,
    TranscriptWriter,
    recording_aggregator,
    verify_transcript_cli,
    write_roster,
)
from fedmap_secure.transcript.verify import verify_chain, verify_round

SITES = ["s0", "s1", "s2", "s3", "s4"]
LAYOUT = VectorLayout((Field(name="x", length=3, bound=2.0),))


@dataclasses.dataclass
class Run:
    transcripts: list[RoundTranscript]
    records: list[SiteRecord]
    keys: dict[str, IdentityKey]
    aggregator: RecordingSecureAggregator


def _run(rounds: int = 2, sink: TranscriptWriter | None = None, sites: object = None) -> Run:
    rand = DeterministicRandom(b"transcript-test")
    keys = {s: IdentityKey.generate(rand) for s in SITES}
    config = SecAggConfig.for_threat_model(n=5, dropout_fraction=0.2, corrupt_fraction=0.0)
    records: list[SiteRecord] = []
    chain = TranscriptChain(sink=sink)
    agg = RecordingSecureAggregator(
        identities=keys,
        config=config,
        chain=chain,
        site_sink=sites if callable(sites) else records.append,
        random_bytes=rand,
        dropouts={"s4": DropPoint.AFTER_SHARES},
    )
    rng = np.random.default_rng(0)
    for r in range(rounds):
        inputs = {s: rng.uniform(-1, 1, 3) for s in SITES}
        agg.aggregate(round_index=r, layout=LAYOUT, inputs=inputs, context=f"model-{r}".encode())
    return Run(list(chain.transcripts), records, keys, agg)


@pytest.fixture(scope="module")
def run() -> Run:
    return _run()


def _fails(transcripts: list[RoundTranscript], run: Run, *words: str) -> TranscriptError:
    with pytest.raises(TranscriptError) as caught:
        verify_chain(transcripts, run.aggregator.roster)
    for word in words:
        assert word in str(caught.value), str(caught.value)
    return caught.value


def _with(t: RoundTranscript, **changes: object) -> RoundTranscript:
    return dataclasses.replace(t, **changes)  # type: ignore[arg-type]


def _resign_view(t: RoundTranscript, run: Run, site: str, **changes: object) -> RoundTranscript:
    """The site itself signs a different view (a genuine split view, not a forgery)."""
    views = []
    for v in t.views:
        if v.site == site:
            v = dataclasses.replace(v, **changes)  # type: ignore[arg-type]
            payload = encoding.consistency_payload(
                session=t.session_id,
                round_index=t.round_index,
                survivors=v.survivors,
                context_hash=v.context_hash,
            )
            v = dataclasses.replace(
                v, signature=run.keys[site].sign(payload, label=LABEL_CONSISTENCY)
            )
        views.append(v)
    return _with(t, views=tuple(views))


def test_a_real_round_transcript_verifies_and_round_trips_through_json(run: Run) -> None:
    t0, t1 = run.transcripts
    verify_chain(run.transcripts, run.aggregator.roster, head=t1.transcript_hash())
    assert t0.dropped == ("s4",)
    assert set(t0.survivors) == {"s0", "s1", "s2", "s3"}
    assert {r.kind for r in t0.reveals} == {ShareKind.SELF_MASK, ShareKind.MASK_KEY}
    assert t1.previous_hash == t0.transcript_hash()
    assert t1.context_hash == bound_context_hash(t1.model_hash, t0.transcript_hash())
    again = RoundTranscript.from_json(json.loads(json.dumps(t0.to_json())))
    assert again == t0
    assert again.transcript_hash() == t0.transcript_hash()
    kinds = {m.kind for m in t0.messages}
    assert len(kinds) == 9  # every message type is recorded


def test_transcript_holds_no_secret_value(run: Run) -> None:
    text = json.dumps(run.transcripts[0].to_json())
    assert "ciphertext" not in text
    assert "masked" not in text
    assert "value" not in text


def test_every_site_record_cross_checks_with_the_server_transcript(run: Run) -> None:
    by_round = {t.round_index: t for t in run.transcripts}
    assert len(run.records) == 2 * len(SITES)
    for record in run.records:
        cross_check(by_round[record.round_index], record)
        assert SiteRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_altered_message_hash_is_caught_with_what_and_where(run: Run) -> None:
    t0 = run.transcripts[0]
    i = next(i for i, m in enumerate(t0.messages) if m.kind == "AdvertiseKeys" and m.peer == "s2")
    messages = list(t0.messages)
    messages[i] = dataclasses.replace(messages[i], digest=bytes(32))
    err = _fails([_with(t0, messages=tuple(messages))], run, "round 0", "'s2'", "AdvertiseKeys")
    assert "does not match" in str(err)


def test_altered_hash_of_a_content_free_message_is_caught_by_the_site_record(run: Run) -> None:
    t0 = run.transcripts[0]
    i = next(i for i, m in enumerate(t0.messages) if m.kind == "MaskedInput" and m.peer == "s1")
    messages = list(t0.messages)
    messages[i] = dataclasses.replace(messages[i], digest=bytes(32))
    record = next(r for r in run.records if r.site == "s1" and r.round_index == 0)
    with pytest.raises(TranscriptError, match=r"round 0, site 's1', message MaskedInput"):
        cross_check(_with(t0, messages=tuple(messages)), record)


def test_forged_signature_on_advertised_keys_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    ads = list(t0.advertisements)
    forged = bytes([ads[1].signature[0] ^ 1]) + ads[1].signature[1:]
    ads[1] = dataclasses.replace(ads[1], signature=forged)
    _fails([_with(t0, advertisements=tuple(ads))], run, "round 0", "'s1'", "does not verify")


def test_substituted_advertised_key_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    ads = list(t0.advertisements)
    ads[3] = dataclasses.replace(ads[3], mask_public=ads[2].mask_public)
    _fails([_with(t0, advertisements=tuple(ads))], run, "'s3'", "AdvertiseKeys", "does not verify")


def test_missing_signature_on_advertised_keys_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    ads = list(t0.advertisements)
    ads[0] = dataclasses.replace(ads[0], signature=b"")
    _fails([_with(t0, advertisements=tuple(ads))], run, "'s0'", "no signature")


def test_keys_signed_by_someone_else_are_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    ads = list(t0.advertisements)
    payload = encoding.advertisement_payload(
        setup=t0.setup_id,
        round_index=0,
        site="s0",
        mask_public=ads[0].mask_public,
        encryption_public=ads[0].encryption_public,
    )
    other = run.keys["s1"].sign(payload, label=LABEL_KEY_ADVERTISEMENT)
    ads[0] = dataclasses.replace(ads[0], signature=other)
    _fails([_with(t0, advertisements=tuple(ads))], run, "'s0'", "roster key")


def test_different_survivor_set_signed_by_one_site_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    split = _resign_view(t0, run, "s2", survivors=("s0", "s1", "s2"))
    _fails([split], run, "round 0", "'s2'", "ConsistencySignature", "split view")


def test_forged_consistency_signature_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    views = list(t0.views)
    views[0] = dataclasses.replace(views[0], survivors=("s0", "s1", "s2"))
    _fails([_with(t0, views=tuple(views))], run, "'s0'", "does not verify")


def test_model_hash_mismatch_for_one_site_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    other = _resign_view(t0, run, "s3", context_hash=bytes(range(32)))
    _fails([other], run, "round 0", "'s3'", "model/context hash")


def test_round_model_hash_altered_is_caught(run: Run) -> None:
    _fails([_with(run.transcripts[0], model_hash=bytes(32))], run, "round 0", "context hash")


def test_both_share_kinds_revealed_for_one_peer_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    first = t0.reveals[0]
    other = ShareKind.MASK_KEY if first.kind is ShareKind.SELF_MASK else ShareKind.SELF_MASK
    extra = Reveal(responder=first.responder, owner=first.owner, kind=other)
    _fails([_with(t0, reveals=(*t0.reveals, extra))], run, f"'{first.responder}'", "BOTH")


def test_removed_round_breaks_the_chain(run: Run) -> None:
    _fails([run.transcripts[1]], run, "round 1", "chain broken", "missing")


def test_reordered_rounds_break_the_chain(run: Run) -> None:
    _fails(list(reversed(run.transcripts)), run, "chain broken")


def test_replaced_round_breaks_the_chain() -> None:
    a, b = _run(rounds=2), _run(rounds=3)
    _fails([a.transcripts[0], b.transcripts[2]], a, "chain broken")


def test_aggregate_hash_altered_is_caught_by_the_chain_and_the_head(run: Run) -> None:
    t0, t1 = run.transcripts
    bad0 = _with(t0, aggregate_hash=bytes(32))
    _fails([bad0, t1], run, "round 0", "'aggregate'", "altered")
    bad1 = _with(t1, aggregate_hash=bytes(32))
    with pytest.raises(TranscriptError, match=r"round 1: .*published chain head"):
        verify_chain([t0, bad1], run.aggregator.roster, head=t1.transcript_hash())


def test_unknown_site_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    messages = list(t0.messages)
    messages[0] = dataclasses.replace(messages[0], peer="mallory")
    _fails([_with(t0, messages=tuple(messages))], run, "'mallory'", "unknown site")
    ads = list(t0.advertisements)
    ads[0] = dataclasses.replace(ads[0], site="mallory")
    _fails([_with(t0, advertisements=tuple(ads))], run, "'mallory'", "unknown site")


def test_missing_masked_input_of_a_survivor_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    kept = tuple(m for m in t0.messages if not (m.kind == "MaskedInput" and m.peer == "s0"))
    _fails([_with(t0, messages=kept)], run, "'s0'", "MaskedInput")


def test_too_few_views_for_the_quorum_is_caught(run: Run) -> None:
    t0 = run.transcripts[0]
    _fails([_with(t0, views=t0.views[:1], reveals=())], run, "quorum")


def test_transcript_for_another_roster_is_refused(run: Run) -> None:
    rand = DeterministicRandom(b"other roster")
    other = RecordingSecureAggregator(
        identities={s: IdentityKey.generate(rand) for s in SITES},
        config=run.aggregator.config,
        chain=TranscriptChain(),
    )
    with pytest.raises(
        TranscriptError, match="round 0: transcript was recorded for another roster"
    ):
        verify_round(run.transcripts[0], other.roster)


def test_site_record_catches_a_message_the_site_never_sent(run: Run) -> None:
    t0 = run.transcripts[0]
    entry = next(m for m in t0.messages if m.kind == "UnmaskResponse" and m.peer == "s2")
    forged = dataclasses.replace(entry, digest=bytes(32))
    record = next(r for r in run.records if r.site == "s2" and r.round_index == 0)
    with pytest.raises(TranscriptError, match=r"site 's2', message UnmaskResponse"):
        cross_check(_with(t0, messages=(*t0.messages, forged)), record)


def test_site_record_catches_a_transcript_that_invents_a_reveal(run: Run) -> None:
    t0 = run.transcripts[0]
    record = next(r for r in run.records if r.site == "s0" and r.round_index == 0)
    dropped_reveal = tuple(r for r in t0.reveals if r.responder != "s0" or r.owner != "s1")
    with pytest.raises(TranscriptError, match=r"site 's0'.*revealed shares differ"):
        cross_check(_with(t0, reveals=dropped_reveal), record)


def test_recording_aggregator_factory_writes_everything_the_cli_needs(tmp_path: Path) -> None:
    agg = recording_aggregator(
        SITES, tmp_path, random_bytes=DeterministicRandom(b"factory"), max_colluding_sites=1
    )
    for r in range(2):
        inputs = {s: np.full(3, 0.25) for s in SITES}
        agg.aggregate(round_index=r, layout=LAYOUT, inputs=inputs, context=b"m")
    out = io.StringIO()
    status = verify_transcript_cli(
        [tmp_path / "transcripts"],
        tmp_path / "roster.json",
        site_records=tmp_path / "site-records",
        out=out,
    )
    assert status == 0, out.getvalue()


def test_cli_writes_files_and_verifies_them(tmp_path: Path) -> None:
    run = _run(rounds=2, sink=TranscriptWriter(tmp_path), sites=SiteRecordWriter(tmp_path))
    roster = tmp_path / "roster.json"
    write_roster(roster, run.aggregator.roster)
    tdir = tmp_path / "transcripts"
    assert sorted(p.name for p in tdir.iterdir()) == ["HEAD", "round-0000.json", "round-0001.json"]
    out = io.StringIO()
    head = (tdir / "HEAD").read_text().strip()
    status = verify_transcript_cli(
        [tdir], roster, site_records=tmp_path / "site-records", head=head, out=out
    )
    assert status == 0
    assert out.getvalue().startswith("OK: 2 round")
    data = json.loads((tdir / "round-0000.json").read_text())
    data["aggregate"]["aggregate_hash"] = "00" * 32
    (tdir / "round-0000.json").write_text(json.dumps(data))
    out = io.StringIO()
    assert verify_transcript_cli([tdir], roster, out=out) == 1
    assert "FAILED: round 0" in out.getvalue()
    assert "aggregate" in out.getvalue()
    out = io.StringIO()
    assert verify_transcript_cli([tmp_path / "nothing.json"], roster, out=out) == 2


def test_malformed_transcript_json_is_refused_with_a_reason(run: Run) -> None:
    data = run.transcripts[0].to_json()
    del data["keys"]
    with pytest.raises(TranscriptError, match="malformed transcript"):
        RoundTranscript.from_json(data)
    data = run.transcripts[0].to_json()
    data["messages"][0]["direction"] = "sideways"
    with pytest.raises(TranscriptError, match="malformed transcript"):
        RoundTranscript.from_json(data)
    assert Direction.SENT.value == "sent"


@pytest.mark.parametrize("point", list(DropPoint))
def test_transcripts_verify_whatever_stage_a_site_drops_at(point: DropPoint) -> None:
    rand = DeterministicRandom(b"drop" + point.value.encode())
    keys = {s: IdentityKey.generate(rand) for s in SITES}
    config = SecAggConfig.for_threat_model(n=5, dropout_fraction=0.2, corrupt_fraction=0.0)
    records: list[SiteRecord] = []
    chain = TranscriptChain()
    agg = RecordingSecureAggregator(
        identities=keys,
        config=config,
        chain=chain,
        site_sink=records.append,
        random_bytes=rand,
        dropouts={"s1": point},
    )
    inputs = {s: np.full(3, 0.5) for s in SITES}
    result = agg.aggregate(round_index=4, layout=LAYOUT, inputs=inputs, context=b"m")
    (t,) = chain.transcripts
    verify_chain([t], agg.roster)
    assert frozenset(t.survivors) == result.contributors
    for record in records:
        cross_check(t, record)


def test_recording_changes_nothing_about_the_result() -> None:
    from fedmap_secure.secagg.inprocess import SecureAggregator

    rand_a, rand_b = DeterministicRandom(b"same"), DeterministicRandom(b"same")
    keys_a = {s: IdentityKey.generate(rand_a) for s in SITES}
    keys_b = {s: IdentityKey.generate(rand_b) for s in SITES}
    config = SecAggConfig.for_threat_model(n=5, dropout_fraction=0.2, corrupt_fraction=0.0)
    plain = SecureAggregator(identities=keys_a, config=config, random_bytes=rand_a)
    recorded = RecordingSecureAggregator(
        identities=keys_b, config=config, chain=TranscriptChain(), random_bytes=rand_b
    )
    inputs = {s: np.linspace(-1, 1, 3) * (i + 1) / 5 for i, s in enumerate(SITES)}
    a = plain.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"m")
    b = recorded.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=b"m")
    assert a.contributors == b.contributors
    np.testing.assert_allclose(a.sums["x"], b.sums["x"], atol=1e-9)


def test_transcript_modules_other_than_the_file_adapter_do_no_io() -> None:
    import ast

    package = Path(__file__).resolve().parents[2] / "fedmap_secure" / "transcript"
    forbidden = {"pathlib", "io", "time", "pickle", "torch", "grpc", "sys", "shutil"}
    for module in sorted(package.glob("*.py")):
        if module.name == "store.py":
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        calls = {
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert not imported & forbidden, (module.name, imported & forbidden)
        assert "open" not in calls, module.name


def test_malformed_site_record_is_refused(run: Run) -> None:
    data = run.records[0].to_json()
    data["sent"][0][0] = "Gossip"
    with pytest.raises(TranscriptError, match="malformed site record"):
        SiteRecord.from_json(data)
    data = run.records[0].to_json()
    data["context_hash"] = "00"
    with pytest.raises(TranscriptError, match="context_hash"):
        SiteRecord.from_json(data)
