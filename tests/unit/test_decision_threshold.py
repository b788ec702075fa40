"""[training] threshold = "validation": the per-site decision threshold (issue 16)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.config.loader import parse_config
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.threshold import (
    ARGMAX_THRESHOLD,
    balanced_accuracy,
    choose_threshold,
    holdout_size,
    predict_with_threshold,
    stratified_holdout,
)
from fedmap_secure.model_files import load_model, read_meta
from fedmap_secure.runtime.privacy import simulated_policy
from fedmap_secure.runtime.site import SiteRuntime, SiteSetup
from fedmap_secure.runtime.state import initial_state
from fedmap_secure.training.interface import DecisionThreshold
from tests.cli_runner import simulate_tiny_plain, tiny_config


def _proba(p1: list[float]) -> np.ndarray:
    p = np.array(p1, dtype=np.float64)
    return np.stack([1 - p, p], axis=1)


def test_threshold_maximises_validation_balanced_accuracy() -> None:
    # every positive scores 0.2-0.4, every negative below: argmax calls all negative
    proba = _proba([0.05, 0.1, 0.15, 0.2, 0.3, 0.4])
    y = np.array([0, 0, 0, 1, 1, 1])
    choice = choose_threshold(proba, y)
    assert choice.chosen
    assert choice.source == "validation"
    assert 0.15 < choice.value <= 0.2
    assert choice.validation_ba == 1.0
    assert choice.validation_ba_argmax == 0.5
    assert balanced_accuracy(predict_with_threshold(proba, choice.value), y) == 1.0


def test_flat_curve_keeps_argmax() -> None:
    proba = _proba([0.1, 0.9, 0.2, 0.8])
    choice = choose_threshold(proba, np.array([0, 1, 0, 1]))
    assert choice.value == ARGMAX_THRESHOLD
    assert choice.validation_ba == 1.0


def test_one_class_validation_falls_back_to_argmax_with_the_reason() -> None:
    choice = choose_threshold(_proba([0.3, 0.6, 0.7]), np.array([1, 1, 1]))
    assert not choice.chosen
    assert choice.value == ARGMAX_THRESHOLD
    assert "0 negative and 3 positive" in choice.source


def test_multiclass_keeps_argmax() -> None:
    proba = np.full((3, 3), 1 / 3)
    assert choose_threshold(proba, np.array([0, 1, 2])).source.startswith("argmax: 3 classes")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 1), min_size=6, max_size=60), st.floats(0.05, 0.5))
def test_holdout_size_depends_on_n_only_and_keeps_both_classes(
    labels: list[int], fraction: float
) -> None:
    y = np.array(labels, dtype=np.int64)
    kept, held = stratified_holdout(y, fraction, np.random.default_rng(0))
    assert held.size == holdout_size(y.size, fraction)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(y.size))
    for c in (0, 1):
        if (y == c).sum() >= 2 and held.size >= 2:
            assert (y[held] == c).any()
            assert (y[kept] == c).any()


def test_threshold_fraction_is_validated() -> None:
    with pytest.raises(ConfigError, match="threshold_fraction"):
        parse_config("[training]\nthreshold_fraction = 1.0\n")
    cfg = parse_config('[training]\nthreshold = "validation"\n')
    assert cfg.training.threshold is DecisionThreshold.VALIDATION


def test_run_records_each_sites_threshold_and_load_model_uses_it(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run.toml", '[training]\nthreshold = "validation"\n')
    out = tmp_path / "out"
    code, text = simulate_tiny_plain(config, out, rounds=2)
    assert code == 0, text
    summary = json.loads((out / "summary.json").read_text())
    trained = {s["site"]: s for s in summary["sites"] if s["tier"] != "unseen"}
    assert set(trained) == {"a", "b", "c", "d"}
    for s in trained.values():
        t = s["threshold"]
        assert t is not None
        assert 0.0 <= t["value"] <= 1.0
        assert t["validation_rows"] > 0
    # held-out rows are not trained on: 60 training rows at site a, 12 held out
    assert trained["a"]["n_train"] == 60 - holdout_size(60, 0.2)
    sidecar = out / "models" / "site-a.json"
    meta, _, _ = read_meta(sidecar)
    assert meta.decision_threshold is not None
    assert meta.decision_threshold.value == trained["a"]["threshold"]["value"]
    model = load_model(sidecar)
    rows = np.random.default_rng(1).normal(size=(50, 4))
    expected = (model.predict_proba(rows)[:, 1] >= meta.decision_threshold.value).astype(int)
    np.testing.assert_array_equal(model.predict(rows), expected)


def test_sidecar_without_threshold_still_loads(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run.toml")
    out = tmp_path / "out"
    code, text = simulate_tiny_plain(config, out, rounds=1, extra=("--method", "local"))
    assert code == 0, text
    sidecar = out / "models" / "site-a.json"
    data = json.loads(sidecar.read_text())
    assert data.pop("decision_threshold") is None
    sidecar.write_text(json.dumps(data))
    assert load_model(sidecar).threshold is None


def test_single_class_site_keeps_argmax_and_says_so() -> None:
    """A site whose training rows are all positive (heart's Switzerland can be): no
    threshold can be chosen; it keeps argmax and its result says why."""
    cfg = parse_config(
        '[simulation]\nmethod = "local"\n[training]\nthreshold = "validation"\n'
        "[privacy]\nenabled = false\n"
    )
    rng = np.random.default_rng(0)
    data = SiteData(
        name="swiss",
        tier=Tier.TRAIN,
        x_train=rng.normal(size=(30, 4)).astype(np.float32),
        y_train=np.ones(30, dtype=np.int64),
        x_test=rng.normal(size=(8, 4)).astype(np.float32),
        y_test=np.array([0, 1] * 4, dtype=np.int64),
    )
    runtime = SiteRuntime(
        SiteSetup(
            data=data,
            feature_names=("f0", "f1", "f2", "f3"),
            n_classes=2,
            policy=simulated_policy(cfg.privacy, "swiss", "test"),
        )
    )
    state, _ = initial_state(cfg, n_features=4, n_classes=2)
    runtime.train_round(cfg, state, None)
    result = runtime.finish(cfg, dataclasses.replace(state, round_index=1))
    assert result.threshold is not None
    assert not result.threshold.chosen
    assert result.threshold.value == ARGMAX_THRESHOLD
    assert "0 negative" in result.threshold.source
    assert result.n_train == 30 - holdout_size(30, 0.2)


def test_pooled_uses_each_sites_held_out_rows(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run.toml", '[training]\nthreshold = "validation"\n')
    out = tmp_path / "out"
    code, text = simulate_tiny_plain(config, out, rounds=2, extra=("--method", "pooled"))
    assert code == 0, text
    sites = json.loads((out / "summary.json").read_text())["sites"]
    chosen = {s["site"]: s["threshold"] for s in sites}
    assert chosen["e"] is None  # unseen: no training rows, nothing held out
    assert all(chosen[name]["validation_rows"] > 0 for name in "abcd")


def test_site_records_keep_the_threshold(tmp_path: Path) -> None:
    from fedmap_secure.fedmap.threshold import ThresholdChoice
    from fedmap_secure.runtime.records import read_records, write_records
    from fedmap_secure.runtime.results import SiteResult

    choice = ThresholdChoice(
        value=0.3,
        source="validation",
        validation_rows=7,
        validation_ba=0.8,
        validation_ba_argmax=0.6,
    )
    result = SiteResult(
        site="a",
        tier=Tier.TRAIN,
        n_train=5,
        n_test=3,
        personalised=None,
        global_=None,
        threshold=choice,
    )
    write_records(tmp_path / "r.json", result, [])
    assert read_records(tmp_path / "r.json")[0].threshold == choice


def test_holdout_keeps_a_row_of_each_class_in_training() -> None:
    """Found by hypothesis: with two positives, both could be drawn into the held-out part."""
    y = np.array([0, 0, 0, 0, 1, 0, 1, 0], dtype=np.int64)
    for seed in range(50):
        kept, held = stratified_holdout(y, 0.5, np.random.default_rng(seed))
        assert (y[kept] == 1).any()
        assert (y[held] == 1).any()
