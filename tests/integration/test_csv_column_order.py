"""Issue 13: a hospital whose CSV columns come in another order gets the same result.

The four Fed-Heart-Disease hospitals are written as raw CSV sites with the
bundled declared schema (``schema.toml``); in a second folder one hospital's
columns are reversed. Both runs (the real CLI, in-process, no DP so that the
comparison is exact) give identical per-site metrics, equal to the bundled
``heart`` dataset's; a hospital with a renamed column is refused in one line.
"""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from fedmap_secure.cli import main
from fedmap_secure.data import load_dataset
from fedmap_secure.data.heart import FEATURE_NAMES, raw_heart_sites
from tests.torch_threads import _single_thread  # noqa: F401

SCHEMA = resources.files("fedmap_secure.data").joinpath("bundled", "heart_disease", "schema.toml")


def _write_sites(root: Path, *, reversed_site: str | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "schema.toml").write_text(SCHEMA.read_text())
    for site in raw_heart_sites():
        columns = list(FEATURE_NAMES)
        for split, x, y in (
            ("train", site.x_train, site.y_train),
            ("test", site.x_test, site.y_test),
        ):
            frame = pd.DataFrame(x, columns=columns)
            frame["y"] = y
            if site.name == reversed_site:
                frame = frame[list(reversed(frame.columns))]
            frame.to_csv(root / f"{site.name}_{split}.csv", index=False, float_format="%.17g")
    return root


def _run(data: str, out: Path, fast: Path) -> dict[str, object]:
    args = ["simulate", "--dataset", data, "--method", "fedavg", "--rounds", "2", "--seed", "1"]
    args += ["--no-dp", "--no-secagg", "--config", str(fast), "--out", str(out)]
    if data.startswith("csv:"):
        args += ["--label-column", "y"]
    buf = io.StringIO()
    assert main(args, console=Console(file=buf, width=200)) == 0, buf.getvalue()
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    return summary


def test_reversed_columns_give_the_same_result(tmp_path: Path) -> None:
    fast = tmp_path / "fast.toml"
    fast.write_text("[training]\nepochs = 2\n")
    plain = _write_sites(tmp_path / "plain")
    flipped = _write_sites(tmp_path / "flipped", reversed_site="hungary")
    assert (flipped / "hungary_train.csv").read_text().startswith("y,restecg_2,")
    a = load_dataset(f"csv:{plain}", label_column="y")
    b = load_dataset(f"csv:{flipped}", label_column="y")
    heart = load_dataset("heart")
    for x, y, z in zip(a.sites, b.sites, heart.sites, strict=True):
        np.testing.assert_array_equal(x.x_train, y.x_train)
        np.testing.assert_array_equal(x.x_train, z.x_train)
    assert a.schema.digest() == heart.schema.digest()
    first = _run(f"csv:{plain}", tmp_path / "a", fast)
    second = _run(f"csv:{flipped}", tmp_path / "b", fast)
    bundled = _run("heart", tmp_path / "c", fast)
    assert first["sites"] == second["sites"] == bundled["sites"]


def test_a_renamed_column_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write_sites(tmp_path / "data")
    path = root / "va_train.csv"
    path.write_text(path.read_text().replace("thalach", "max_hr", 1))
    buf = io.StringIO()
    args = ["simulate", "--dataset", f"csv:{root}", "--label-column", "y", "--out", str(tmp_path)]
    assert main(args, console=Console(file=buf, width=300)) == 2
    text = capsys.readouterr().err
    assert text.count("\n") == 1
    assert "va_train.csv: columns differ from the consortium's feature schema" in text
    assert "unexpected ['max_hr']" in text
