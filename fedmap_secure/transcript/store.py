"""File adapter for transcripts: the only module of ``transcript`` that touches files.

Layout under an output directory ``OUT``::

    OUT/transcripts/round-0003.json                  the server's transcript of round 3
    OUT/transcripts/HEAD                             hex hash of the newest transcript
    OUT/site-records/<site>/round-0003.json          each site's own record

``verify_transcript_cli(paths, roster_path)`` is the ``fedmap-secure
verify-transcript`` command: it loads transcripts (files, or directories
holding ``round-*.json``), the roster (``{"version": 1, "sites": {id: hex}}``,
the transport's ``roster.json``), optionally the sites' records and a
published head, verifies, prints ``OK`` or what failed and where, and returns
the exit status (0 verified, 1 verification failed, 2 unusable input).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import ConfigError, TranscriptError
from fedmap_secure.secagg.config import Roster, SecAggConfig
from fedmap_secure.transcript.aggregator import RecordingSecureAggregator
from fedmap_secure.transcript.recorder import TranscriptChain
from fedmap_secure.transcript.records import RoundTranscript, canonical_bytes
from fedmap_secure.transcript.site_record import SiteRecord, cross_check
from fedmap_secure.transcript.verify import verify_chain

ROSTER_VERSION = 1


def round_file(directory: Path, round_index: int) -> Path:
    return directory / f"round-{round_index:04d}.json"


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(canonical_bytes(data) + b"\n")
    tmp.replace(path)


class TranscriptWriter:
    """A ``TranscriptChain`` sink writing ``OUT/transcripts/round-NNNN.json`` and ``HEAD``."""

    def __init__(self, out: Path) -> None:
        self.directory = Path(out) / "transcripts"

    def __call__(self, transcript: RoundTranscript) -> None:
        _write(round_file(self.directory, transcript.round_index), transcript.to_json())
        head = self.directory / "HEAD.tmp"
        head.write_text(transcript.transcript_hash().hex() + "\n")
        head.replace(self.directory / "HEAD")


def fresh_chain(out: Path) -> TranscriptChain:
    """A new chain writing under ``out``; ``ConfigError`` if ``out`` holds an earlier run's."""
    directory = Path(out) / "transcripts"
    if any(directory.glob("round-*.json")) or (directory / "HEAD").exists():
        raise ConfigError(
            f"transcript directory {str(directory)!r} already exists with an "
            "earlier run's transcripts; choose a new --out or remove it"
        )
    return TranscriptChain(sink=TranscriptWriter(out))


def resume_chain(out: Path, roster: Roster) -> TranscriptChain:
    """The chain under ``out``, continued from its verified head (a restarted server).

    An empty or missing directory starts at ``GENESIS``. Otherwise every
    ``round-*.json`` is loaded and verified against ``roster`` (links, signatures)
    and the newest must hash to ``HEAD``; anything else is a ``ConfigError``
    naming the directory: the server refuses to extend a chain it cannot vouch for.
    """
    directory = Path(out) / "transcripts"
    files = sorted(directory.glob("round-*.json"))
    head_file = directory / "HEAD"
    if not files and not head_file.exists():
        return TranscriptChain(sink=TranscriptWriter(out))
    problem = f"transcript directory {str(directory)!r} is inconsistent"
    if not files or not head_file.exists():
        raise ConfigError(f"{problem}: it has {'HEAD' if files == [] else 'rounds'} only")
    try:
        head = bytes.fromhex(head_file.read_text(encoding="ascii").strip())
        transcripts = [load_transcript(f) for f in files]
        verify_chain(transcripts, roster, head=head)
    except (TranscriptError, ValueError, OSError) as exc:
        raise ConfigError(f"{problem}: {exc}") from None
    return TranscriptChain(head=transcripts[-1], sink=TranscriptWriter(out))


class SiteRecordWriter:
    """A site-record sink writing ``OUT/site-records/<site>/round-NNNN.json``."""

    def __init__(self, out: Path) -> None:
        self.directory = Path(out) / "site-records"

    def __call__(self, record: SiteRecord) -> None:
        _write(round_file(self.directory / record.site, record.round_index), record.to_json())


def recording_aggregator(
    sites: Sequence[str],
    out: Path,
    *,
    dropout_fraction: float = 0.1,
    corrupt_fraction: float = 0.1,
    bits: int = 64,
    random_bytes: Callable[[int], bytes] = os.urandom,
    max_colluding_sites: int | None = None,
) -> RecordingSecureAggregator:
    """Like ``SecureAggregator.simulated``, writing transcripts, site records and the roster
    under ``out`` (``OUT/transcripts``, ``OUT/site-records``, ``OUT/roster.json``)."""
    config = SecAggConfig.for_threat_model(
        n=len(sites),
        dropout_fraction=dropout_fraction,
        corrupt_fraction=corrupt_fraction,
        bits=bits,
        max_colluding_sites=max_colluding_sites,
    )
    identities = {s: IdentityKey.generate(random_bytes) for s in sites}
    aggregator = RecordingSecureAggregator(
        identities=identities,
        config=config,
        chain=TranscriptChain(sink=TranscriptWriter(out)),
        site_sink=SiteRecordWriter(out),
        random_bytes=random_bytes,
    )
    write_roster(Path(out) / "roster.json", aggregator.roster)
    return aggregator


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


def load_roster(path: Path) -> Roster:
    """The roster file; ``ConfigError`` names the file and the bad entry."""
    document = _json(path)
    if not isinstance(document, dict) or document.get("version") != ROSTER_VERSION:
        raise ConfigError(f"roster {path}: expected an object with version {ROSTER_VERSION}")
    sites = document.get("sites")
    if not isinstance(sites, dict) or not sites:
        raise ConfigError(f"roster {path}: 'sites' must be a non-empty object")
    try:
        return Roster.from_mapping({s: bytes.fromhex(k) for s, k in sites.items()})
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"roster {path}: {exc}") from None


def write_roster(path: Path, roster: Roster) -> None:
    sites = {site: key.hex() for site, key in roster.entries}
    _write(path, {"version": ROSTER_VERSION, "sites": sites})


def transcript_files(paths: Sequence[Path]) -> list[Path]:
    """Expand directories to their ``round-*.json`` files (sorted); keep files as given."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("round-*.json")) if p.is_dir() else [p]
    if not files:
        raise ConfigError("no transcript files given")
    return files


def load_transcript(path: Path) -> RoundTranscript:
    try:
        return RoundTranscript.from_json(_json(path))
    except TranscriptError as exc:
        raise TranscriptError(f"{path}: {exc}") from None


def load_site_records(directory: Path) -> list[SiteRecord]:
    return [SiteRecord.from_json(_json(f)) for f in sorted(directory.glob("*/round-*.json"))]


def verify_files(
    paths: Sequence[Path],
    roster_path: Path,
    *,
    site_records: Path | None = None,
    head: bytes | None = None,
) -> int:
    """Verify and cross-check; returns the number of rounds verified (raises on failure)."""
    roster = load_roster(roster_path)
    transcripts = [load_transcript(f) for f in transcript_files(paths)]
    verify_chain(transcripts, roster, head=head)
    if site_records is not None:
        by_round = {t.round_index: t for t in transcripts}
        for record in load_site_records(site_records):
            if record.round_index in by_round:
                cross_check(by_round[record.round_index], record)
    return len(transcripts)


def verify_transcript_cli(
    paths: Sequence[str | Path],
    roster_path: str | Path,
    *,
    site_records: str | Path | None = None,
    head: str | None = None,
    out: TextIO | None = None,
) -> int:
    """``fedmap-secure verify-transcript``: print OK or what failed; return the exit status."""
    stream = out if out is not None else sys.stdout
    try:
        count = verify_files(
            [Path(p) for p in paths],
            Path(roster_path),
            site_records=Path(site_records) if site_records is not None else None,
            head=bytes.fromhex(head) if head is not None else None,
        )
    except TranscriptError as exc:
        print(f"FAILED: {exc}", file=stream)
        return 1
    except (ConfigError, ValueError) as exc:
        print(f"ERROR: {exc}", file=stream)
        return 2
    print(f"OK: {count} round transcript(s) verified against the roster", file=stream)
    return 0
