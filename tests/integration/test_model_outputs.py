"""``simulate`` writes each training site's personalised model and the global model (issue 13).

The dataset is ``tiny`` behind a non-identity feature schema (centre 1, scale 2),
so the raw rows a user holds differ from the rows the sites trained on: a loaded
model that skipped the schema's preprocessing would not reproduce the accuracy
the summary reports.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
from rich.console import Console

import fedmap_secure
from fedmap_secure.cli import main
from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import DataError
from fedmap_secure.model_files import read_meta
from tests.cli_runner import tiny_config
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401

CENTRE, SCALE = 1.0, 2.0


def _schema(names: tuple[str, ...]) -> FeatureSchema:
    return FeatureSchema(
        features=tuple(
            FeatureSpec(name=n, low=-100.0, high=100.0, centre=CENTRE, scale=SCALE) for n in names
        )
    )


def _scaled_tiny(spec: str, label_column: str | None, seed: int) -> FederatedDataset:
    """``tiny`` declared under ``_schema``: its rows are the transformed ones."""
    if spec != "tiny":
        raise DataError(f"unknown dataset {spec!r}")
    data = tiny_dataset(seed=seed)
    return dataclasses.replace(data, schema=_schema(data.feature_names))


def test_simulate_writes_loadable_models(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tiny_config(tmp_path / "fast.toml", "[training]\nepochs = 2\n")
    args = ["simulate", "--config", str(config), "--dataset", "tiny", "--rounds", "2"]
    console = Console(file=io.StringIO(), width=200)
    code = main([*args, "--out", str(out)], dataset_loader=_scaled_tiny, console=console)
    assert code == 0, console.file.getvalue()  # type: ignore[attr-defined]
    summary = json.loads((out / "summary.json").read_text())
    dataset = _scaled_tiny("tiny", None, 0)
    training = [s for s in dataset.sites if s.tier is Tier.TRAIN]
    models = summary["models"]
    assert Path(models["global"]) == out / "models" / "global.json"
    assert {s.name for s in training} <= set(models["sites"])
    assert "e" not in models["sites"]  # the unseen site has no model of its own

    global_meta, weights, _ = read_meta(models["global"])
    assert weights.is_file()
    assert global_meta.site == "global"
    assert global_meta.schema == dataset.schema
    reported = {s["site"]: s for s in summary["sites"]}
    for site in training:
        path = Path(models["sites"][site.name])
        assert path == out / "models" / f"site-{site.name}.json"
        meta, weights, _ = read_meta(path)
        assert weights.is_file()
        assert (meta.site, meta.round, meta.run_id) == (site.name, 1, global_meta.run_id)
        assert meta.epsilon_spent == reported[site.name]["epsilon_spent"]
        assert meta.epsilon_spent is not None
        assert meta.epsilon_spent > 0
        model = fedmap_secure.load_model(path)
        raw = site.x_test.astype(np.float64) * SCALE + CENTRE  # what a user holds
        accuracy = float(np.mean(model.predict(raw) == site.y_test))
        assert accuracy == reported[site.name]["personalised"]["accuracy"]
        # the same rows without the schema's preprocessing are not the model's input
        assert not np.allclose(model.transform(raw).numpy(), raw)
