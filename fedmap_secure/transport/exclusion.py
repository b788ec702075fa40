"""What the server does after an aborted round: blame, exclude, and never reuse the index.

Policy (DEPLOYMENT.md "Aborted rounds", SPEC §7.1):

- The culprits of an aborted round are the sites the protocol names: the
  sites the session excluded for a protocol violation during the round
  (``ServerSession.excluded``) and the sites an ``AbortedError`` names (e.g. a
  dealer whose shares do not rebuild its committed secret). An abort with no
  culprit (too few sites joined, too many dropped out) blames nobody.
- A culprit is refused at ``Join`` for the next ``exclude_rounds`` round
  indices after the aborted one (``None``: for the rest of the server's life);
  the refusal is PERMISSION_DENIED and names the round that caused it.
- Round indices are never reused: ``fresh_index`` returns an index after every
  index whose keys were seen (announced), whether the round completed or not.

``AbortJournal`` keeps one JSON line per aborted round (round index, setup id,
culprits, detail) in ``<state_dir>/transcripts/aborted.jsonl`` so a restarted
server keeps both the exclusions and the used indices. It is append-only and
not part of the transcript hash chain (an aborted round unmasks nothing, and
has no quorum of signatures to anchor it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedmap_secure.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AbortRecord:
    """One aborted round: who the protocol blamed, and why."""

    round_index: int
    setup_id: bytes
    culprits: tuple[str, ...]
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "round_index": self.round_index,
            "setup_id": self.setup_id.hex(),
            "culprits": list(self.culprits),
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: object) -> AbortRecord:
        if not isinstance(data, dict):
            raise ValueError("an abort record must be an object")
        culprits = data["culprits"]
        if not isinstance(culprits, list) or not all(isinstance(c, str) for c in culprits):
            raise ValueError("culprits must be a list of site ids")
        index = data["round_index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError("round_index must be an int >= 0")
        return cls(
            round_index=index,
            setup_id=bytes.fromhex(str(data["setup_id"])),
            culprits=tuple(culprits),
            detail=str(data["detail"]),
        )


class AbortJournal:
    """Append-only JSON-lines file of ``AbortRecord`` (durable: fsync per line)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> list[AbortRecord]:
        if not self.path.exists():
            return []
        records = []
        lines = self._lines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(AbortRecord.from_json(json.loads(line)))
            except (ValueError, KeyError) as exc:
                raise ConfigError(
                    f"abort journal {self.path} is unusable (line {number}): {exc}"
                ) from None
        return records

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read abort journal {self.path}: {exc.strerror}") from None

    def append(self, record: AbortRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_json(), sort_keys=True) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class ExclusionPolicy:
    """Which sites are refused at which round, and which round indices are used up.

    ``exclude_rounds``: how many round indices after the aborted one a culprit
    is refused (``None``: for the rest of the run). Thread-safe.
    """

    def __init__(
        self,
        *,
        exclude_rounds: int | None = None,
        journal: AbortJournal | None = None,
    ) -> None:
        if exclude_rounds is not None and exclude_rounds < 1:
            raise ConfigError("exclude_rounds must be >= 1 (or None: the rest of the run)")
        self.exclude_rounds = exclude_rounds
        self._journal = journal
        self._lock = threading.Lock()
        self._until: dict[str, tuple[int | None, int]] = {}  # site -> (last refused, cause)
        self._used = -1
        self.aborted: list[AbortRecord] = []
        for record in journal.read() if journal is not None else []:
            self._apply(record)

    def _apply(self, record: AbortRecord) -> None:
        self.aborted.append(record)
        self._used = max(self._used, record.round_index)
        last = None if self.exclude_rounds is None else record.round_index + self.exclude_rounds
        for site in record.culprits:
            self._until[site] = (last, record.round_index)

    def used(self, round_index: int) -> None:
        """Mark ``round_index`` as announced (its keys may have been seen)."""
        with self._lock:
            self._used = max(self._used, round_index)

    def fresh_index(self, wanted: int) -> int:
        """``wanted``, or the first index after every index already announced."""
        with self._lock:
            return max(wanted, self._used + 1)

    def record_abort(
        self, *, round_index: int, setup_id: bytes, culprits: Iterable[str], detail: str
    ) -> AbortRecord:
        record = AbortRecord(
            round_index=round_index,
            setup_id=setup_id,
            culprits=tuple(sorted(set(culprits))),
            detail=detail,
        )
        with self._lock:
            if self._journal is not None:
                self._journal.append(record)
            self._apply(record)
        if record.culprits:
            span = (
                "for the rest of the run"
                if self.exclude_rounds is None
                else f"for the next {self.exclude_rounds} round(s)"
            )
            log.warning(
                "round %d aborted; excluding %s %s: %s",
                round_index,
                list(record.culprits),
                span,
                detail,
            )
        return record

    def refusal(self, site: str, round_index: int) -> str | None:
        """Why ``site`` may not join ``round_index``, or None if it may."""
        with self._lock:
            entry = self._until.get(site)
        if entry is None:
            return None
        last, cause = entry
        if last is not None and round_index > last:
            return None
        until = "for the rest of the run" if last is None else f"until after round {last}"
        return f"excluded {until} for its part in aborted round {cause}"
