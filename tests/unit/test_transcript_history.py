"""verify-transcript against a server that rewrites its history (issue 15, THREAT_MODEL T4/T9).

Three in-process rounds written to files (transcripts, HEAD, every site's
records). The server then removes rounds and rewrites HEAD; the sites'
records must expose it. A corrupted file is a verification failure (exit 1).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.errors import ConfigError, TranscriptError
from fedmap_secure.transcript.site_record import SiteRecord
from fedmap_secure.transcript.store import (
    SiteRecordWriter,
    check_files,
    load_transcript,
    recording_aggregator,
    round_file,
    verify_transcript_cli,
)

SITES = ["s0", "s1", "s2", "s3"]
LAYOUT = VectorLayout((Field(name="x", length=3, bound=2.0),))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("history")
    agg = recording_aggregator(
        SITES, out, random_bytes=DeterministicRandom(b"history"), max_colluding_sites=0
    )
    for r in range(3):
        inputs = {s: np.full(3, 0.25 * (r + 1)) for s in SITES}
        agg.aggregate(round_index=r, layout=LAYOUT, inputs=inputs, context=f"m{r}".encode())
    return out


def _copy(recorded: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(recorded, out)
    return out


def _cli(out: Path, head: str | None = None) -> tuple[int, str]:
    text = io.StringIO()
    status = verify_transcript_cli(
        [out / "transcripts"],
        out / "roster.json",
        site_records=out / "site-records",
        head=head,
        out=text,
    )
    return status, text.getvalue()


def test_the_untouched_history_verifies_and_says_what_was_cross_checked(recorded: Path) -> None:
    status, text = _cli(recorded, head=(recorded / "transcripts" / "HEAD").read_text().strip())
    assert status == 0, text
    assert "OK: 3 round transcript(s)" in text
    assert "cross-checked: 12 (site x round) of 4 site(s) x 3 round(s)" in text


def test_removing_the_newest_round_and_rewriting_head_fails_on_the_site_records(
    recorded: Path, tmp_path: Path
) -> None:
    out = _copy(recorded, tmp_path)
    transcripts = out / "transcripts"
    round_file(transcripts, 2).unlink()
    previous = load_transcript(round_file(transcripts, 1))
    (transcripts / "HEAD").write_text(previous.transcript_hash().hex() + "\n")
    with pytest.raises(TranscriptError, match=r"round 2, site 's0'.*removed"):
        check_files([transcripts], out / "roster.json", site_records=out / "site-records")
    status, text = _cli(out, head=previous.transcript_hash().hex())
    assert status == 1
    assert text.startswith("FAILED: round 2")


def test_a_dropped_middle_round_blames_the_gap_not_the_round_before(
    recorded: Path, tmp_path: Path
) -> None:
    out = _copy(recorded, tmp_path)
    round_file(out / "transcripts", 1).unlink()
    status, text = _cli(out)
    assert status == 1
    assert text.startswith("FAILED: round 2: chain broken"), text
    assert "between round 0 and round 2" in text
    assert "round 0 was altered" not in text


def test_a_corrupted_file_is_a_verification_failure_not_a_usage_error(
    recorded: Path, tmp_path: Path
) -> None:
    out = _copy(recorded, tmp_path)
    round_file(out / "transcripts", 1).write_bytes(b'{"version": 1, "header": {trunc')
    status, text = _cli(out)
    assert status == 1, text
    assert "FAILED" in text
    assert "round-0001.json" in text
    assert "corrupted" in text
    out2 = _copy(recorded, tmp_path / "b")
    record = round_file(out2 / "site-records" / "s1", 0)
    record.write_bytes(b"\x00\xff not json")
    status, text = _cli(out2)
    assert status == 1, text
    assert "corrupted" in text
    status, text = _cli(tmp_path / "missing")
    assert status == 2  # a missing roster or directory stays a usage error
    assert text.startswith("ERROR")


def test_site_records_are_append_only(recorded: Path, tmp_path: Path) -> None:
    out = _copy(recorded, tmp_path)
    path = round_file(out / "site-records" / "s0", 1)
    before = path.read_bytes()
    record = SiteRecord.from_json(__import__("json").loads(before))
    with pytest.raises(ConfigError, match="append-only"):
        SiteRecordWriter(out)(record)
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.tmp"))
