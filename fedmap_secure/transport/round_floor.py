"""A site's durable floor of round indices: it never plays a round index twice.

Once a site has advertised keys in round r (its round keys for r may have been
seen), it records r in ``highest_round`` next to its site records
(``<records>/site-records/<site>/``, one folder per run; write to a temporary
file, fsync, rename, fsync the directory) *before* sending anything; it
refuses every later announcement of a round <= that index. A server (or a
network attacker) replaying a completed round, or re-running an index after a
restart, gets a refusal, never a second transcript for the same round and
never a second set of signatures over it (SPEC §13, THREAT_MODEL T9).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fedmap_secure.errors import ConfigError


class RoundFloor:
    """The highest round index this site has played, persisted under ``directory``."""

    FILE = "highest_round"

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / self.FILE
        self._lock = threading.Lock()
        self._highest = self._read()

    def _read(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror}") from None
        if not text.isdigit():
            raise ConfigError(f"{self.path} is corrupt: expected a round index, got {text[:20]!r}")
        return int(text)

    @property
    def highest(self) -> int | None:
        with self._lock:
            return self._highest

    def allows(self, round_index: int) -> bool:
        highest = self.highest
        return highest is None or round_index > highest

    def advance(self, round_index: int) -> None:
        """Record ``round_index`` durably; ``ConfigError`` if it is not above the floor."""
        with self._lock:
            if self._highest is not None and round_index <= self._highest:
                raise ConfigError(
                    f"round {round_index} is not after round {self._highest}, already played"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{round_index}\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._highest = round_index
