"""Issue 17: CSV sites with three string-labelled classes run end to end, with and without DP."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fedmap_secure.cli import main
from tests.torch_threads import _single_thread  # noqa: F401

CLASSES = ("none", "mild", "severe")


def _write(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    features = "".join(
        f'\n[[features]]\nname = "f{j}"\nlow = -6.0\nhigh = 6.0\ncentre = 0.0\nscale = 1.0\n'
        for j in range(4)
    )
    (root / "schema.toml").write_text('classes = ["none", "mild", "severe"]\n' + features)
    weights = rng.normal(size=(4, 3)) * 2.0
    for site in range(3):
        for split, n in (("train", 90), ("test", 45)):
            x = rng.normal(size=(n, 4)) + 0.3 * site
            y = (x @ weights + rng.gumbel(size=(n, 3))).argmax(axis=1)
            rows = ["f0,f1,f2,f3,outcome"]
            for xi, yi in zip(x, y, strict=True):
                rows.append(",".join(f"{v:.5f}" for v in xi) + f",{CLASSES[yi]}")
            (root / f"h{site}_{split}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("private", [False, True])
def test_three_string_classes_through_simulate(tmp_path: Path, private: bool) -> None:
    data = _write(tmp_path / "sites")
    out = tmp_path / "out"
    args = ["simulate", "--dataset", f"csv:{data}", "--label-column", "outcome", "--rounds", "2"]
    args += ["--no-secagg", "--out", str(out)] + ([] if private else ["--no-dp"])
    buf = io.StringIO()
    assert main(args, console=Console(file=buf, width=200)) == 0, buf.getvalue()
    summary = json.loads((out / "summary.json").read_text())
    for site in summary["sites"]:
        metrics = site["personalised"]
        assert metrics["roc_auc"] is not None  # one-vs-rest macro AUC
        if not private:
            assert metrics["balanced_accuracy"] > 0.5  # chance is 1/3
        else:
            assert site["epsilon_spent"] > 0
