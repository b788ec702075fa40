"""SQLite storage adapter for a site's privacy ledger (the only I/O in privacy/).

Durability: the database runs in WAL mode with ``synchronous=FULL``, so each
``COMMIT`` fsyncs the write-ahead log before returning; a new database file is
followed by an fsync of its directory. ``append_checked`` holds an ``IMMEDIATE``
write lock from reading the stored charges to committing the new one, so two
processes sharing a ledger cannot both pass the budget check (check then
commit). ``PrivacyLedger.charge`` returns only after that commit: a crash can
over-count a release that never left, never under-count one that did.

Data only, no pickle: events are canonical JSON rows with a closed set of
tagged types (``events.py``), settings are one JSON row, and a
``schema_version`` table names the layout. Reading validates every row; a
corrupt row, a gap in the charge sequence (a deleted charge) or an unknown
schema raises ``LedgerIntegrityError``.

Each charge row also stores a SHA-256 hash chain link,
``H(label || JSON([previous link, row fields]))``, rooted in the settings row.
It detects accidental or careless edits that would still parse (a bit flip
turning 2250 steps into 2050, a changed budget, a deleted or reordered row),
which would otherwise under-count silently. It is not a defence against an
operator who rewrites the file on purpose: anyone with write access can
recompute the chain (that would need signatures or external anchoring).

One file per site: ``<site state dir>/privacy_ledger.sqlite3``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedmap_secure.errors import ConfigError, LedgerIntegrityError, PrivacyError
from fedmap_secure.privacy.accountant_base import Accountant
from fedmap_secure.privacy.accountants import create_accountant, cross_check_accountant
from fedmap_secure.privacy.budget import Budget
from fedmap_secure.privacy.ledger import (
    LedgerSettings,
    PendingCharge,
    PrivacyLedger,
    StoredCharge,
    events_from_json_text,
    events_to_json_text,
)
from fedmap_secure.privacy.noise_source import NoiseSource
from fedmap_secure.privacy.report import LedgerReport, build_report

LEDGER_FILENAME = "privacy_ledger.sqlite3"
SCHEMA_VERSION = 2
"""2: settings carry ``adjacency`` (replace-one) and ``noise_source``. Version 1 ledgers
(add/remove-one, noise source unrecorded) are refused, never reinterpreted."""

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE ledger_settings ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " settings_json TEXT NOT NULL,"
    " created_at TEXT NOT NULL)",
    "CREATE TABLE charges ("
    " sequence INTEGER PRIMARY KEY AUTOINCREMENT,"
    " round_index INTEGER NOT NULL CHECK (round_index >= 0),"
    " events_json TEXT NOT NULL,"
    " note TEXT NOT NULL,"
    " epsilon_after REAL NOT NULL,"
    " charged_at TEXT NOT NULL,"
    " row_hash TEXT NOT NULL)",
)
_HASH_LABEL = b"fedmap-secure/privacy-ledger/v1\x00"


def _chain_hash(previous: str, row: Sequence[Any]) -> str:
    """SHA-256 link of the hash chain: H(label || JSON([previous, *row]))."""
    material = json.dumps([previous, *row], separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(_HASH_LABEL + material.encode("utf-8")).hexdigest()


def iso_utc_now() -> str:
    """The default clock: ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def ledger_path(site_state_dir: Path | str) -> Path:
    """Where a site's ledger lives inside its state directory."""
    return Path(site_state_dir) / LEDGER_FILENAME


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SqliteLedgerStore:
    """A durable ``LedgerStore`` in one SQLite file.

    ``create=False`` refuses to create a missing file (for read-side tools).
    ``now`` supplies the timestamp written with each charge.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        create: bool = True,
        now: Callable[[], str] = iso_utc_now,
    ) -> None:
        self._path = Path(path)
        self._now = now
        # The charges this connection has verified (parsed, gap-free, hash chain intact) and
        # the chain link of the last one: a later load reads and checks only the rows after.
        self._verified: list[StoredCharge] = []
        self._verified_link = ""
        is_new = not self._path.exists()
        if is_new and not create:
            raise ConfigError(f"no privacy ledger at {self._path}")
        with self._errors():
            # check_same_thread=False: a site may open its ledger in one thread and charge
            # it from the thread that runs a round (e.g. a gRPC site); calls are sequential
            # (PrivacyLedger is not for concurrent use), and processes serialise in SQLite.
            self._conn = sqlite3.connect(
                self._path, isolation_level=None, timeout=30.0, check_same_thread=False
            )
            self._journal_mode = str(self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
            self._conn.execute("PRAGMA synchronous=FULL")
            self._ensure_schema()
        if is_new:
            _fsync_directory(self._path.parent)

    @property
    def path(self) -> Path:
        return self._path

    def pragmas(self) -> dict[str, Any]:
        """The durability settings in force (journal mode, synchronous level 2 = FULL)."""
        with self._errors():
            return {
                "journal_mode": self._conn.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": self._conn.execute("PRAGMA synchronous").fetchone()[0],
            }

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise PrivacyError(f"privacy ledger {self._path}: storage error: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise LedgerIntegrityError(
                f"privacy ledger {self._path} is not a readable database: {exc}"
            ) from exc

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; ``write`` takes the write lock up front (BEGIN IMMEDIATE)."""
        with self._errors():
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _ensure_schema(self) -> None:
        with self._transaction() as conn:
            tables = {
                row[0]
                for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            if not tables:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            if "schema_version" not in tables:
                raise LedgerIntegrityError(f"{self._path} is not a privacy ledger (no schema)")
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
            if versions == [1]:
                raise LedgerIntegrityError(
                    f"{self._path}: a version-1 ledger (add/remove-one adjacency, noise source "
                    "not recorded) cannot be continued: this release states replace-one "
                    "adjacency and records whether the noise was seeded; keep the old release "
                    "to read it, and start a new site state directory"
                )
            if versions != [SCHEMA_VERSION]:
                raise LedgerIntegrityError(
                    f"{self._path}: unsupported ledger schema version {versions!r} "
                    f"(this program reads version {SCHEMA_VERSION})"
                )

    def read_settings(self) -> LedgerSettings | None:
        with self._errors():
            row = self._conn.execute("SELECT settings_json FROM ledger_settings").fetchone()
        return None if row is None else self._parse_settings(row[0])

    def _parse_settings(self, text: object) -> LedgerSettings:
        try:
            data = json.loads(str(text))
        except ValueError as exc:
            raise LedgerIntegrityError(f"{self._path}: settings row is not JSON") from exc
        return LedgerSettings.from_json(data)

    def initialise_or_read(self, settings: LedgerSettings) -> LedgerSettings:
        with self._transaction() as conn:
            row = conn.execute("SELECT settings_json FROM ledger_settings").fetchone()
            if row is not None:
                return self._parse_settings(row[0])
            conn.execute(
                "INSERT INTO ledger_settings (id, settings_json, created_at) VALUES (1, ?, ?)",
                (json.dumps(settings.to_json(), sort_keys=True), self._now()),
            )
        return settings

    def load(self) -> list[StoredCharge]:
        with self._transaction(write=False) as conn:
            return self._load(conn)

    def _genesis(self, conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT settings_json FROM ledger_settings").fetchone()
        return _chain_hash("", ["settings", "" if row is None else str(row[0])])

    def _load(self, conn: sqlite3.Connection) -> list[StoredCharge]:
        """All charges, each row validated, the sequence gap-free and the hash chain intact.

        The first load of a connection reads and checks every row; later loads read
        only the rows after the last verified one (checked from its chain link), after
        confirming that the last verified row still carries its hash and that no row
        was deleted: the cost of a charge does not grow with the number of charges.
        Any mismatch falls back to the full check, which raises on tampering.
        """
        high_row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'charges'").fetchone()
        high = high_row[0] if high_row else 0
        known = len(self._verified)
        if known and not self._still_verified(conn, known, high):
            self._verified, self._verified_link, known = [], "", 0
        rows = conn.execute(
            "SELECT sequence, round_index, events_json, note, epsilon_after, charged_at, row_hash"
            " FROM charges WHERE sequence > ? ORDER BY sequence",
            (known,),
        ).fetchall()
        charges = [self._parse_row(row[:6]) for row in rows]
        expected = list(range(known + 1, high + 1))
        if [c.sequence for c in charges] != expected:
            raise LedgerIntegrityError(
                f"{self._path}: charge sequence has gaps (a charge was deleted); "
                "the ledger can no longer prove what was spent"
            )
        link = self._verified_link if known else self._genesis(conn)
        for row in rows:
            link = _chain_hash(link, row[:6])
            if row[6] != link:
                raise LedgerIntegrityError(
                    f"{self._path}: charge #{row[0]} does not match the ledger's hash chain "
                    "(the row or an earlier one, or the settings, were modified)"
                )
        self._verified.extend(charges)
        self._verified_link = link
        return list(self._verified)

    def _still_verified(self, conn: sqlite3.Connection, known: int, high: int) -> bool:
        """Whether the verified prefix is still in the file: its last row carries the same
        hash and every row up to it is present (else the next load checks everything)."""
        if high < known:
            return False
        row = conn.execute("SELECT row_hash FROM charges WHERE sequence = ?", (known,)).fetchone()
        count = conn.execute(
            "SELECT COUNT(*) FROM charges WHERE sequence <= ?", (known,)
        ).fetchone()[0]
        return row is not None and row[0] == self._verified_link and count == known

    def _parse_row(self, row: Sequence[Any]) -> StoredCharge:
        sequence, round_index, events_json, note, epsilon_after, charged_at = row
        try:
            if not (isinstance(round_index, int) and round_index >= 0):
                raise ValueError("bad round_index")
            if not (isinstance(note, str) and isinstance(charged_at, str)):
                raise ValueError("bad note or timestamp")
            if not isinstance(epsilon_after, float | int) or not epsilon_after >= 0:
                raise ValueError("bad epsilon_after")
            if not isinstance(events_json, str):
                raise ValueError("events_json is not text")
            events = events_from_json_text(events_json)
        except (ValueError, PrivacyError) as exc:
            raise LedgerIntegrityError(
                f"{self._path}: charge #{sequence} is corrupt: {exc}"
            ) from None
        return StoredCharge(
            sequence=sequence,
            round_index=round_index,
            events=events,
            note=note,
            epsilon_after=float(epsilon_after),
            charged_at=charged_at,
        )

    def append_checked(
        self, decide: Callable[[Sequence[StoredCharge]], PendingCharge]
    ) -> StoredCharge:
        with self._transaction() as conn:
            existing = self._load(conn)
            pending = decide(existing)
            sequence = len(existing) + 1
            charged_at = self._now()
            if not isinstance(charged_at, str):
                raise ConfigError("the ledger clock must return an ISO timestamp string")
            row = (
                sequence,
                pending.round_index,
                events_to_json_text(pending.events),
                pending.note,
                float(pending.epsilon_after),
                charged_at,
            )
            link = _chain_hash(self._verified_link, row)
            conn.execute(
                "INSERT INTO charges (sequence, round_index, events_json, note, epsilon_after,"
                " charged_at, row_hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*row, link),
            )
        stored = StoredCharge(
            sequence=sequence,
            round_index=pending.round_index,
            events=pending.events,
            note=pending.note,
            epsilon_after=pending.epsilon_after,
            charged_at=charged_at,
        )
        # Committed: the new row extends the verified prefix (read back as stored).
        self._verified.append(stored)
        self._verified_link = link
        return stored


def open_site_ledger(
    site_state_dir: Path | str,
    *,
    budget: Budget,
    accountant: Accountant,
    cross_check: Accountant | None = None,
    now: Callable[[], str] = iso_utc_now,
    noise_source: NoiseSource = NoiseSource.OS_CSPRNG,
) -> PrivacyLedger:
    """Open (creating if needed) a site's ledger, bound to ``budget``, ``accountant`` and
    ``noise_source``."""
    directory = Path(site_state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    store = SqliteLedgerStore(ledger_path(directory), now=now)
    try:
        return PrivacyLedger(
            store, budget, accountant, cross_check=cross_check, noise_source=noise_source
        )
    except BaseException:
        store.close()
        raise


def open_existing_ledger(
    site_state_dir: Path | str, *, with_cross_check: bool = True
) -> PrivacyLedger:
    """Open an existing ledger with the budget and accountant stored in it (for reports)."""
    store = SqliteLedgerStore(ledger_path(site_state_dir), create=False)
    try:
        settings = store.read_settings()
        if settings is None:
            raise LedgerIntegrityError(f"{store.path}: ledger was never initialised")
        cross = cross_check_accountant() if with_cross_check else None
        return PrivacyLedger(
            store,
            settings.budget(),
            create_accountant(settings.accountant),
            cross_check=cross,
            noise_source=NoiseSource(settings.noise_source),
        )
    except BaseException:
        store.close()
        raise


def load_report(site_state_dir: Path | str, *, with_cross_check: bool = True) -> LedgerReport:
    """The report of an existing site ledger, for ``fedmap-secure ledger show``.

    Print ``report.to_table()`` with a rich Console, or ``json.dumps(report.to_json())``.
    """
    with open_existing_ledger(site_state_dir, with_cross_check=with_cross_check) as ledger:
        return build_report(ledger)
