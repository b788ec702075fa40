"""SQLite store of the server's state: one row per completed round, resumed on restart.

What the server keeps is all public to it anyway: the global model gamma, the
ICNN prior psi and aggregate metrics (derived from sums). Each completed round
appends one row, in one transaction, *after* the round's update, holding the
state the next round starts from; a restarted server reads the newest row and
continues with that round. A round that aborted or was interrupted writes
nothing, so bad input or a crash mid-round leaves the stored state unchanged.

Data only: vectors are little-endian float64 blobs with a SHA-256 over each row
(detects accidental corruption, not a deliberate rewrite); metrics and the run
configuration are canonical JSON. The configuration is stored once; resuming
with another one is refused (``ConfigError``). WAL mode, ``synchronous=FULL``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedmap_secure.aggregation import FloatVector
from fedmap_secure.errors import ConfigError

STATE_FILENAME = "server_state.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rounds ("
    " next_round INTEGER PRIMARY KEY CHECK (next_round >= 1),"
    " gamma BLOB NOT NULL,"
    " psi BLOB,"
    " metrics_json TEXT NOT NULL,"
    " completed_at TEXT NOT NULL,"
    " row_hash TEXT NOT NULL)",
)


@dataclass(frozen=True, kw_only=True, eq=False)
class StoredState:
    """The state after a completed round: where training continues."""

    next_round: int
    gamma: FloatVector
    psi: FloatVector | None
    metrics: dict[str, object]


def _blob(vector: FloatVector | None) -> bytes | None:
    return None if vector is None else np.ascontiguousarray(vector, dtype="<f8").tobytes()


def _row_hash(next_round: int, gamma: bytes, psi: bytes | None, metrics_json: str) -> str:
    h = hashlib.sha256(b"fedmap-secure/server-state/v1\x00")
    for part in (str(next_round).encode(), gamma, b"-" if psi is None else b"+" + psi):
        h.update(len(part).to_bytes(8, "big") + part)
    h.update(metrics_json.encode())
    return h.hexdigest()


class ServerStateStore:
    """The server's round-by-round state in ``<state dir>/server_state.sqlite3``."""

    def __init__(self, path: Path, *, run_config_json: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            for statement in _SCHEMA:
                db.execute(statement)
            stored = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not stored:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT INTO meta VALUES ('run_config', ?)", (run_config_json,))
            elif stored.get("schema_version") != str(SCHEMA_VERSION):
                raise ConfigError(f"{path}: unknown schema version {stored.get('schema_version')}")
            elif stored.get("run_config") != run_config_json:
                raise ConfigError(
                    f"{path} holds a run with another configuration; use a new state folder"
                )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def save(
        self,
        *,
        next_round: int,
        gamma: FloatVector,
        psi: FloatVector | None,
        metrics: Mapping[str, object],
    ) -> None:
        """Record the state after a completed round (rounds only move forward)."""
        metrics_json = json.dumps(dict(metrics), sort_keys=True, allow_nan=False)
        g, p = np.ascontiguousarray(gamma, dtype="<f8").tobytes(), _blob(psi)
        with self._connect() as db:
            (last,) = db.execute("SELECT MAX(next_round) FROM rounds").fetchone()
            if last is not None and next_round <= last:
                raise ConfigError(f"state for round {next_round} is not after stored round {last}")
            now = datetime.now(UTC).isoformat()
            db.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?, ?, ?)",
                (next_round, g, p, metrics_json, now, _row_hash(next_round, g, p, metrics_json)),
            )

    def latest(self) -> StoredState | None:
        """The newest stored state, or None for a fresh run; checks the row's hash."""
        with self._connect() as db:
            row = db.execute(
                "SELECT next_round, gamma, psi, metrics_json, row_hash FROM rounds"
                " ORDER BY next_round DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        next_round, gamma, psi, metrics_json, row_hash = row
        if _row_hash(next_round, gamma, psi, metrics_json) != row_hash:
            raise ConfigError(f"{self.path}: stored state of round {next_round} is corrupt")
        return StoredState(
            next_round=next_round,
            gamma=np.frombuffer(gamma, dtype="<f8").astype(np.float64),
            psi=None if psi is None else np.frombuffer(psi, dtype="<f8").astype(np.float64),
            metrics=json.loads(metrics_json),
        )

    def history(self) -> list[dict[str, object]]:
        """Metrics of every stored round, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT metrics_json FROM rounds ORDER BY next_round").fetchall()
        return [json.loads(m) for (m,) in rows]
