from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedmap_secure.process_clock import process_start, process_wall_seconds


def test_process_start_is_before_any_import_of_this_module() -> None:
    assert process_start() <= time.time()
    assert process_wall_seconds() > 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_a_fresh_process_counts_its_imports() -> None:
    """A process that sleeps 0.3 s before importing the clock still counts those 0.3 s."""
    code = (
        "import time; time.sleep(0.3)\n"
        "from fedmap_secure.process_clock import process_wall_seconds\n"
        "print(process_wall_seconds())"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert float(out.stdout) >= 0.29
