"""Issue 16's regression pin: without DP, FedMAP is not worse than with DP.

On Fed-Heart-Disease at a fixed seed (1) and 20 rounds, the non-private FedMAP of
the default configuration must reach at least the mean balanced accuracy of the same
run under record-level DP at epsilon 1 (noise from a seeded stream, so the DP run is
reproducible). Measured: no DP 0.764, DP 0.746. The defaults before the tuning protocol
of docs/TUNING.md failed it (no DP 0.605, DP 0.724): the non-private trainer was
mis-tuned (Adam 5e-2, 10 epochs, early stopping on 20% of tiny sites). At fewer rounds
the margin shrinks to noise (10 rounds, before the DP score defaults: 0.763 vs 0.761),
and at epsilon 4 it was 0.004, so the pin uses 20 rounds and epsilon 1. With the
personalisation solve of the non-private sites (``[personalisation]``, session 5) the
no-DP figure is 0.792 (0.786 with it off), 0.798 with the solve's own knobs (lambda 100,
lr 1e-2, no early stopping; benchmarks/results/personalisation/solve_heart_nodp.json, seed 1);
the DP run does not use it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from fedmap_secure.cli import main
from tests.torch_threads import _single_thread  # noqa: F401

ARGS = ["simulate", "--dataset", "heart", "--method", "fedmap", "--rounds", "20", "--seed", "1"]


def _balanced_accuracy(out: Path, *extra: str) -> float:
    console = Console(file=io.StringIO(), width=200)
    code = main([*ARGS, "--no-secagg", *extra, "--out", str(out)], console=console)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    return float(summary["mean_personalised_balanced_accuracy"])


@pytest.mark.slow
def test_fedmap_without_dp_is_not_worse_than_with_dp_on_heart(tmp_path: Path) -> None:
    no_dp = _balanced_accuracy(tmp_path / "no-dp", "--no-dp")
    dp = _balanced_accuracy(tmp_path / "dp", "--epsilon", "1", "--reproducible-noise")
    assert no_dp >= dp, f"no-DP FedMAP balanced accuracy {no_dp:.3f} < DP (eps 1) {dp:.3f}"
