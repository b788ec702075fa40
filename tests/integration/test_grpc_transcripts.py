"""gRPC rounds record the same transcripts and site records as in-process runs (SPEC §13)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.errors import ConfigError, LocalProtocolError
from fedmap_secure.transcript.records import GENESIS
from fedmap_secure.transcript.store import (
    SiteRecordWriter,
    fresh_chain,
    resume_chain,
    write_roster,
)
from fedmap_secure.transport import codec
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.generated.v1 import service_pb2 as spb
from fedmap_secure.transport.site import SiteOutcome
from tests.cli_runner import run_cli
from tests.integration.grpc_harness import (
    CONTEXT,
    LAYOUT,
    SITES,
    Consortium,
    RoundRun,
    exact_inputs,
    plain_consortium,
    play_round,
    running_server,
)


def _context_of(opening: tm.RoundOpening) -> bytes:
    return CONTEXT  # what every honest site recomputes from the announced model and config


def _rounds(out: Path, consortium: Consortium, indices: range) -> list[RoundRun]:
    """Recorded rounds ``indices`` on a fresh server continuing the chain under ``out``."""
    chain = resume_chain(out, consortium.roster)
    runs = []
    with running_server(consortium, transcripts=chain) as server:
        for r in indices:
            runs.append(
                play_round(
                    server,
                    consortium,
                    exact_inputs(),
                    round_index=r,
                    context_of=_context_of,
                    site_records=SiteRecordWriter(out),
                )
            )
    return runs


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Consortium]:
    """Two recorded gRPC rounds: OUT/transcripts, OUT/site-records, OUT/roster.json."""
    out = tmp_path_factory.mktemp("grpc-transcripts")
    consortium = plain_consortium()
    write_roster(out / "roster.json", consortium.roster)
    fresh_chain(out)  # refuses an earlier run's directory; this one is empty
    for run in _rounds(out, consortium, range(2)):
        assert run.error is None
        assert {r.outcome for r in run.reports.values()} == {SiteOutcome.COMPLETED}
    return out, consortium


def _verify(out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    argv = ["verify-transcript", str(out / "transcripts"), "--roster", str(out / "roster.json")]
    code, _ = run_cli([*argv, *extra])
    return code, capsys.readouterr().out


def test_two_grpc_rounds_verify_with_site_records(
    recorded: tuple[Path, Consortium], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = recorded
    assert sorted(p.name for p in (out / "transcripts").glob("round-*.json")) == [
        "round-0000.json",
        "round-0001.json",
    ]
    assert sorted(p.name for p in (out / "site-records").iterdir()) == sorted(SITES)
    head = (out / "transcripts" / "HEAD").read_text().strip()
    code, text = _verify(out, capsys, "--site-records", str(out / "site-records"), "--head", head)
    assert code == 0, text
    assert "OK: 2 round transcript(s) verified" in text


def test_a_tampered_grpc_transcript_fails(
    recorded: tuple[Path, Consortium], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(recorded[0], out)
    path = out / "transcripts" / "round-0000.json"
    data = json.loads(path.read_text())
    consistency = data["consistency"]
    consistency["survivors"] = consistency["survivors"][:-1]  # hide a contributor of round 0
    path.write_text(json.dumps(data))
    code, text = _verify(out, capsys, "--site-records", str(out / "site-records"))
    assert code == 1
    assert "FAILED" in text


def test_site_records_catch_an_altered_message_digest(
    recorded: tuple[Path, Consortium], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(recorded[0], out)
    path = out / "site-records" / "site-b" / "round-0001.json"
    data = json.loads(path.read_text())
    data["sent"][0][1] = "00" * 32  # site-b's own log contradicts the server's transcript
    path.write_text(json.dumps(data))
    code, text = _verify(out, capsys, "--site-records", str(out / "site-records"))
    assert code == 1
    assert "site-b" in text


def test_a_restarted_server_continues_the_chain(
    recorded: tuple[Path, Consortium], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(recorded[0], out)
    (run,) = _rounds(out, recorded[1], range(2, 3))
    assert run.error is None
    code, text = _verify(out, capsys, "--site-records", str(out / "site-records"))
    assert code == 0, text
    assert "OK: 3 round transcript(s) verified" in text


def test_a_restarted_server_refuses_an_inconsistent_directory(
    recorded: tuple[Path, Consortium], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(recorded[0], out)
    (out / "transcripts" / "HEAD").write_text("11" * 32 + "\n")
    with pytest.raises(ConfigError, match="inconsistent"):
        resume_chain(out, recorded[1].roster)
    (out / "transcripts" / "round-0000.json").unlink()
    with pytest.raises(ConfigError, match="inconsistent"):
        resume_chain(out, recorded[1].roster)
    with pytest.raises(ConfigError, match="earlier run"):
        fresh_chain(out)


def _lying_setup(
    real: Callable[[codec.ServerWireMessage], spb.ServerMessage],
) -> Callable[[codec.ServerWireMessage], spb.ServerMessage]:
    """The server's encoder, but every SecAggSetup names another previous transcript hash."""

    def encode(message: codec.ServerWireMessage) -> spb.ServerMessage:
        wire = real(message)
        if wire.HasField("secagg_setup"):
            wire.secagg_setup.previous_transcript_hash = b"\x42" * 32
        return wire

    return encode


def test_sites_refuse_a_setup_bound_to_another_previous_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    consortium = plain_consortium()
    chain = fresh_chain(tmp_path)
    # the server encodes through the codec module; sites never call encode_server_message
    monkeypatch.setattr(codec, "encode_server_message", _lying_setup(codec.encode_server_message))
    with running_server(consortium, transcripts=chain) as server:
        run = play_round(
            server,
            consortium,
            exact_inputs(),
            context_of=_context_of,
            site_records=SiteRecordWriter(tmp_path),
        )
    assert run.error is not None  # nobody advertised keys: the round aborts
    assert {r.outcome for r in run.reports.values()} == {SiteOutcome.FAILED}
    assert all("previous transcript hash" in r.detail for r in run.reports.values())
    assert chain.head is None
    assert chain.previous_hash == GENESIS
    assert not (tmp_path / "site-records").exists()


def test_a_recording_site_refuses_a_server_without_transcripts(tmp_path: Path) -> None:
    consortium = plain_consortium()
    with running_server(consortium) as server:
        run = play_round(
            server,
            consortium,
            exact_inputs(),
            site_records=SiteRecordWriter(tmp_path),
        )
    assert run.error is not None
    assert {r.outcome for r in run.reports.values()} == {SiteOutcome.FAILED}
    assert all("records no transcript" in r.detail for r in run.reports.values())


def test_unrecorded_sites_still_sum_with_a_recording_server(tmp_path: Path) -> None:
    consortium = plain_consortium()
    with running_server(consortium, transcripts=fresh_chain(tmp_path)) as server:
        run = play_round(server, consortium, exact_inputs(), context_of=_context_of)
    assert run.result is not None
    expected = sum(exact_inputs().values())
    np.testing.assert_array_equal(LAYOUT.flatten(run.result.sums), expected)
    assert (tmp_path / "transcripts" / "round-0000.json").is_file()


def test_a_server_refuses_a_round_its_chain_already_holds(
    recorded: tuple[Path, Consortium], tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(recorded[0], out)
    chain = resume_chain(out, recorded[1].roster)
    with (
        running_server(recorded[1], transcripts=chain) as server,
        pytest.raises(LocalProtocolError, match="chain head"),
    ):
        server.run_round(round_index=1, layout=LAYOUT, context=CONTEXT)
    assert chain.transcripts == ()


def test_the_deployment_server_refuses_transcripts_ahead_of_its_state(
    recorded: tuple[Path, Consortium], tmp_path: Path
) -> None:
    from fedmap_secure.transport.processes import _server_transcripts
    from fedmap_secure.transport.state_store import ServerStateStore

    shutil.copytree(recorded[0] / "transcripts", tmp_path / "transcripts")
    store = ServerStateStore(tmp_path / "state.sqlite", run_config_json="{}")
    with pytest.raises(ConfigError, match="resumes at round 0"):
        _server_transcripts(tmp_path, recorded[1].roster, store)
