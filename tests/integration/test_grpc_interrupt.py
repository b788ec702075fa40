"""Ctrl-C (or SIGTERM) during ``simulate --transport grpc``: one line, no traceback, no orphans.

The command runs in its own session and the test sends SIGINT to that whole
process group, as a terminal does on Ctrl-C, once the site processes exist.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _site_pids(out: Path) -> list[int]:
    """Site processes started by the driver (their job files are their argv)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(out).encode() in part and part.endswith(b"site.toml") for part in cmdline):
            pids.append(int(entry.name))
    return pids


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_prints_one_line_and_stops_the_sites(tmp_path: Path, how: str) -> None:
    """Ctrl-C: SIGINT to the terminal's process group; SIGTERM: to the driver alone."""
    out = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedmap_secure.cli",
            "simulate",
            "--dataset",
            "heart",
            "--transport",
            "grpc",
            "--insecure",
            "--no-dp",
            "--rounds",
            "200",
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        # a terminal's foreground job has SIGINT's default disposition; a test run started
        # in the background by a non-interactive shell inherits SIGINT ignored (POSIX)
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_site_pids(out)) < 4 and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.2)
        assert len(_site_pids(out)) == 4
        while not list(out.glob("transcripts/round-*.json")) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.2)  # until a round has completed: the sites are training
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    # The run's own warnings (e.g. a round aborted while the sites were still starting) may
    # precede it; the interruption itself is one line, the last, and nothing from the sites.
    assert lines[-1] == "fedmap-secure: interrupted"
    assert sum("interrupted" in line for line in lines) == 1
    assert _site_pids(out) == []
    for log in out.glob("grpc/sites/*/site.log"):  # the sites were stopped, not interrupted
        assert "Traceback" not in log.read_text(errors="replace")
