"""A site *process* SIGKILLed at each stage: the server sees the drop, the round goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.grpc_harness import (
    LAYOUT,
    SITES,
    exact_inputs,
    play_round,
    running_server,
    seeded_consortium,
)

ROOT = Path(__file__).resolve().parents[2]
INPUT_INCLUDED = {"ConsistencySignature", "UnmaskResponse"}


@pytest.mark.parametrize(
    "stage", ["AdvertiseKeys", "ShareKeys", "MaskedInput", "ConsistencySignature", "UnmaskResponse"]
)
def test_killed_site_process(stage: str) -> None:
    consortium = seeded_consortium()
    inputs = exact_inputs()
    victim = "site-c"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with running_server(consortium) as server:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.grpc_site_process",
                str(server.port),
                victim,
                stage,
            ],
            cwd=ROOT,
            env=env,
        )
        others = {s: inputs[s] for s in SITES if s != victim}
        # The in-thread sites and the server; the round waits for the process to join and die.
        run = play_round(server, consortium, others)
        assert process.wait(timeout=20) == -9  # SIGKILL, not a clean exit
    assert run.result is not None
    included = set(SITES) if stage in INPUT_INCLUDED else set(SITES) - {victim}
    assert run.result.contributors == frozenset(included)
    expected = sum(inputs[s] for s in sorted(included))
    np.testing.assert_array_equal(LAYOUT.flatten(run.result.sums), expected)
