"""How many local worker processes an in-process simulation uses (``runtime.parallel``).

Light on purpose (no torch): the CLI refuses a bad ``--workers`` before any heavy import.
"""

from __future__ import annotations

import os

from fedmap_secure.errors import ConfigError

AUTO = "auto"
SITES_PER_WORKER_MIN = 8
"""``auto`` uses a worker per this many sites at least (fewer sites: serial)."""


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(setting: int | str, n_sites: int) -> int:
    """How many worker processes a run of ``n_sites`` sites uses (module docstring)."""
    if setting == AUTO:
        return max(1, min(usable_cores(), n_sites // SITES_PER_WORKER_MIN))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"workers must be 'auto' or an integer >= 1, got {setting!r}")
    return max(1, min(setting, n_sites))


def parse_workers(text: str) -> int | str:
    """``--workers`` text: ``auto`` or a positive integer."""
    if text == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--workers must be 'auto' or an integer >= 1, got {text!r}") from None
    if value < 1:
        raise ConfigError(f"--workers must be 'auto' or an integer >= 1, got {text!r}")
    return value
