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
from dataclasses import dataclass
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
    """A site-record sink writing ``OUT/site-records/<site>/round-NNNN.json``, append-only:
    a record, once written, is never replaced (``ConfigError`` if the file exists)."""

    def __init__(self, out: Path) -> None:
        self.directory = Path(out) / "site-records"

    def __call__(self, record: SiteRecord) -> None:
        _write_once(round_file(self.directory / record.site, record.round_index), record.to_json())


def _write_once(path: Path, data: object) -> None:
    """Write ``path`` atomically, refusing to replace an existing file (hard link, no race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(canonical_bytes(data) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigError(
            f"site record {path} already exists; records are append-only (a replayed round?)"
        ) from None
    finally:
        tmp.unlink()


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


def _document(path: Path) -> object:
    """A file's JSON; a file that exists but does not parse is a verification failure."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise TranscriptError(f"{path}: corrupted (not valid JSON: {exc})") from None


def load_transcript(path: Path) -> RoundTranscript:
    try:
        return RoundTranscript.from_json(_document(path))
    except TranscriptError as exc:
        raise TranscriptError(f"{path}: {exc}") if str(path) not in str(exc) else exc from None


def load_site_records(directory: Path) -> list[SiteRecord]:
    records = []
    for f in sorted(directory.glob("*/round-*.json")):
        try:
            records.append(SiteRecord.from_json(_document(f)))
        except TranscriptError as exc:
            raise TranscriptError(f"{f}: {exc}") if str(f) not in str(exc) else exc from None
    return records


@dataclass(frozen=True, kw_only=True)
class Verified:
    """What ``verify_files`` checked."""

    rounds: int
    sites: int = 0
    cross_checked: int = 0  # (site, round) pairs cross-checked against the chain
    aborted: tuple[tuple[str, int], ...] = ()  # site records of rounds that did not complete

    def summary(self) -> str:
        text = f"OK: {self.rounds} round transcript(s) verified against the roster"
        if self.sites:
            text += (
                f"; site records cross-checked: {self.cross_checked} "
                f"(site x round) of {self.sites} site(s) x {self.rounds} round(s)"
            )
        if self.aborted:
            listed = ", ".join(f"{s}/round {r}" for s, r in self.aborted)
            text += f"; records of rounds that did not complete (not in the chain): {listed}"
        return text


def verify_files(
    paths: Sequence[Path],
    roster_path: Path,
    *,
    site_records: Path | None = None,
    head: bytes | None = None,
) -> int:
    """Verify and cross-check; returns the number of rounds verified (raises on failure)."""
    return check_files(paths, roster_path, site_records=site_records, head=head).rounds


def check_files(
    paths: Sequence[Path],
    roster_path: Path,
    *,
    site_records: Path | None = None,
    head: bytes | None = None,
) -> Verified:
    """Verify and cross-check; returns what was checked (raises on failure).

    Every site record must either cross-check against the chain's transcript of
    its round, or be of a round that did not complete for that site and on
    which it revealed no share (an aborted round writes no transcript). A
    record of a completed (or unmasked) round missing from the chain fails:
    the server removed that round (e.g. the newest one, with HEAD rewritten).
    """
    roster = load_roster(roster_path)
    transcripts = [load_transcript(f) for f in transcript_files(paths)]
    verify_chain(transcripts, roster, head=head)
    if site_records is None:
        return Verified(rounds=len(transcripts))
    by_round = {t.round_index: t for t in transcripts}
    records = load_site_records(site_records)
    checked = 0
    aborted: list[tuple[str, int]] = []
    for record in records:
        if record.round_index in by_round:
            cross_check(by_round[record.round_index], record)
            checked += 1
        elif record.unmasked:
            raise TranscriptError(
                f"the site holds a record of this round ({record.outcome}"
                f"{', shares revealed' if record.revealed else ''}) but the chain has no "
                "transcript of it: a round was removed from the server's history",
                round_index=record.round_index,
                site=record.site,
            )
        else:
            aborted.append((record.site, record.round_index))
    return Verified(
        rounds=len(transcripts),
        sites=len({r.site for r in records}),
        cross_checked=checked,
        aborted=tuple(aborted),
    )


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
        verified = check_files(
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
    print(verified.summary(), file=stream)
    return 0
