"""The ``server``/``site``/``keygen``/``verify-transcript`` subcommands of ``fedmap-secure``,
and the transcripts a secure in-process ``simulate`` writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmap_secure.cli import main
from tests.cli_runner import run_cli as _main
from tests.cli_runner import tiny_config
from tests.torch_threads import _single_thread  # noqa: F401


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("server", "server.toml"),
        ("site", "site.toml"),
        ("keygen", "--identity"),
        ("verify-transcript", "--site-records"),
    ],
)
def test_subcommand_help(command: str, phrase: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert phrase in capsys.readouterr().out


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("simulate", "server", "site", "keygen", "verify-transcript", "ledger"):
        assert command in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["server", "--config", "{tmp}/missing.toml"], "cannot read"),
        (["site", "--config", "{tmp}/missing.toml"], "cannot read"),
        (["site"], "--config"),
        (["keygen", "--sites", "only-one", "--out", "{tmp}/pki"], "at least two"),
        (["keygen"], "one of the arguments --sites --identity"),
        (["verify-transcript", "--roster", "{tmp}/r.json"], "paths"),
        (["verify-transcript", "{tmp}", "--roster", "{tmp}/missing.json"], "cannot read"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, text = _main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    captured = capsys.readouterr()
    assert message in captured.err + captured.out + text
    assert "Traceback" not in captured.err


def test_keygen_writes_a_consortium(tmp_path: Path) -> None:
    code, text = _main(["keygen", "--sites", "a1,b2", "--out", str(tmp_path / "pki")])
    assert code == 0, text
    roster = json.loads((tmp_path / "pki" / "roster.json").read_text())
    assert set(roster["sites"]) == {"a1", "b2"}


def _secure_run(out: Path, tmp_path: Path, *extra: str) -> dict[str, object]:
    fast = tmp_path / "fast.toml"
    tiny_config(fast, "[training]\nepochs = 1\n")
    argv = ["simulate", "--config", str(fast), "--dataset", "tiny", "--rounds", "2"]
    code, text = _main([*argv, "--seed", "5", "--out", str(out), *extra])
    assert code == 0, text
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    return summary


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("secure")
    out = tmp / "run"
    return out, _secure_run(out, tmp, "--no-dp")


def test_simulate_records_transcripts(secure_run: tuple[Path, dict[str, object]]) -> None:
    out, summary = secure_run
    assert sorted(p.name for p in (out / "transcripts").glob("round-*.json")) == [
        "round-0000.json",
        "round-0001.json",
    ]
    assert (out / "roster.json").is_file()
    assert any((out / "site-records").glob("*/round-0001.json"))
    privacy = summary["privacy"]
    assert isinstance(privacy, dict)
    transcripts = privacy["secure_aggregation"]["transcripts"]
    assert transcripts["rounds"] == 2
    assert transcripts["directory"] == str(out / "transcripts")
    assert transcripts["head"] == (out / "transcripts" / "HEAD").read_text().strip()


def _verify(out: Path, *extra: str) -> tuple[int, str]:
    argv = ["verify-transcript", str(out / "transcripts"), "--roster", str(out / "roster.json")]
    return _main([*argv, *extra])


def test_verify_transcript_accepts_the_run(
    secure_run: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = secure_run
    head = (out / "transcripts" / "HEAD").read_text().strip()
    assert _verify(out, "--site-records", str(out / "site-records"), "--head", head)[0] == 0
    assert "OK: 2 round transcript(s)" in capsys.readouterr().out


def test_verify_transcript_rejects_a_wrong_head(
    secure_run: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = secure_run
    assert _verify(out, "--head", "00" * 32)[0] == 1
    assert "FAILED" in capsys.readouterr().out


def test_verify_transcript_rejects_tampering(
    secure_run: tuple[Path, dict[str, object]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, _ = secure_run
    copy = tmp_path / "copy"
    (copy / "transcripts").mkdir(parents=True)
    (copy / "roster.json").write_bytes((out / "roster.json").read_bytes())
    for f in (out / "transcripts").glob("round-*.json"):
        (copy / "transcripts" / f.name).write_bytes(f.read_bytes())
    first = copy / "transcripts" / "round-0000.json"
    document = json.loads(first.read_text())
    assert document["aggregate"]["aggregate_hash"] != "11" * 32
    document["aggregate"]["aggregate_hash"] = "11" * 32
    first.write_text(json.dumps(document))
    assert _verify(copy)[0] == 1
    assert "FAILED: " in capsys.readouterr().out


def test_simulate_refuses_to_mix_transcripts_of_two_runs(
    secure_run: tuple[Path, dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = secure_run
    argv = ["simulate", "--dataset", "tiny", "--rounds", "1", "--no-dp", "--out", str(out)]
    argv += ["--config", str(tiny_config(tmp_path / "c.toml"))]
    assert _main(argv)[0] == 2
    assert "earlier run's transcripts" in capsys.readouterr().err


def test_grpc_transport_refuses_what_it_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["simulate", "--dataset", "tiny", "--transport", "grpc", "--out", str(tmp_path)]
    assert _main([*argv, "--method", "pooled"])[0] == 2
    assert "pooled" in capsys.readouterr().err
    assert _main([*argv, "--no-secagg", "--no-dp"])[0] == 2
    assert "--no-secagg" in capsys.readouterr().err


def test_sweep_and_report_are_dispatched_to_their_own_parsers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path)]) == 2
    assert "missing.toml" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "no-such-dir")]) == 2
    assert "no-such-dir" in capsys.readouterr().err
