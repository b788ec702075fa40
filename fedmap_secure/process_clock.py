"""When this process started, for run reports (``summary.json``'s ``process_wall_seconds``).

A run's ``wall_seconds`` covers its rounds only; imports, dataset loading and DP
calibration come before them (a third to a tenth of the process at 10-100 sites),
so the report also gives the wall time since the process started. On Linux the
start is read from ``/proc/self/stat`` (field 22, clock ticks after boot, plus
``btime`` of ``/proc/stat``: 10 ms resolution), which covers the interpreter start
and every import; elsewhere it is the time this module was first imported, which
``cli.py`` does before anything else.
"""

from __future__ import annotations

import os
import time

_IMPORTED = time.time()


def process_start() -> float:
    """Epoch seconds at which this process started (see the module docstring)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open("/proc/stat", encoding="ascii") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime "))
        start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED
    return min(start, _IMPORTED)


def process_wall_seconds() -> float:
    """Wall seconds since this process started (imports, loading, calibration, rounds)."""
    return time.time() - process_start()
