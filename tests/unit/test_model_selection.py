"""[model] candidates: per-run model selection on validation rows (issue 16)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.schema import ModelKind, SimulationConfig, parse_candidate
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.experiments.model_selection import select_model
from fedmap_secure.fedmap.evaluation import EvalMetrics
from fedmap_secure.runtime.results import SimulationResult, SiteResult
from tests.cli_runner import run_cli, simulate_tiny_plain, tiny_config
from tests.synthetic import tiny_dataset

NO_DP = "[privacy]\nenabled = false\n"


def _config(candidates: str) -> SimulationConfig:
    return parse_config(f"[model]\ncandidates = {candidates}\n{NO_DP}")


def _result(view: FederatedDataset, ba: float, auc: float) -> SimulationResult:
    m = EvalMetrics(n=10, accuracy=ba, balanced_accuracy=ba, roc_auc=auc)
    sites = tuple(
        SiteResult(
            site=s.name, tier=s.tier, n_train=s.n_train, n_test=s.n_test, personalised=m, global_=m
        )
        for s in view.sites
    )
    return SimulationResult(
        method="fedmap",
        dataset=view.name,
        rounds=1,
        seed=0,
        sites=sites,
        reports=(),
        server_logs=(),
        final_state=None,
        n_theta=1,
        n_psi=0,
        wall_seconds=0.0,
    )


def test_candidates_parse_and_refuse_bad_entries() -> None:
    assert parse_candidate("logistic")[0] is ModelKind.LOGISTIC
    assert parse_candidate("mlp:32,16") == (ModelKind.MLP, (32, 16))
    for bad in ("mlp", "mlp:0", "mlp:x", "logistic:3", "cnn"):
        with pytest.raises(ConfigError, match=r"model\.candidates"):
            parse_candidate(bad)
    with pytest.raises(ConfigError, match="duplicates"):
        _config('["mlp:16", "mlp:16"]')


def test_the_best_mean_validation_ba_wins_and_never_sees_test_rows(tmp_path: Path) -> None:
    dataset = tiny_dataset()
    scores = {"logistic": (0.55, 0.6), "mlp:16": (0.8, 0.85), "mlp:32": (0.8, 0.80)}
    seen: list[FederatedDataset] = []

    def run(cfg: SimulationConfig, view: FederatedDataset, where: Path) -> SimulationResult:
        seen.append(view)
        spec = "logistic" if cfg.model.kind is ModelKind.LOGISTIC else f"mlp:{cfg.model.hidden[0]}"
        assert not cfg.model.candidates
        return _result(view, *scores[spec])

    config = _config('["logistic", "mlp:16", "mlp:32"]')
    chosen, entry = select_model(config, dataset, tmp_path, run)
    assert entry is not None
    assert entry["chosen"] == "mlp:16"
    assert chosen.model.kind is ModelKind.MLP
    assert chosen.model.hidden == (16,)
    assert chosen.model.candidates == ()
    assert entry["warnings"] == []
    # the views hold training sites only, and their rows all come from the training rows
    train = {s.name: s for s in dataset.sites if s.tier is Tier.TRAIN}
    for view in seen:
        assert {s.name for s in view.sites} == set(train)
        for s in view.sites:
            pool = {r.tobytes() for r in train[s.name].x_train}
            assert all(r.tobytes() in pool for r in np.concatenate([s.x_train, s.x_test]))
            assert s.n_train + s.n_test == train[s.name].n_train


def test_every_candidate_at_chance_is_warned(tmp_path: Path) -> None:
    config = _config('["logistic", "mlp:8"]')
    _, entry = select_model(config, tiny_dataset(), tmp_path, lambda c, v, w: _result(v, 0.5, 0.5))
    assert entry is not None
    assert len(entry["warnings"]) == 3
    assert "every model candidate is at chance" in entry["warnings"][-1]


def test_no_candidates_changes_nothing(tmp_path: Path) -> None:
    config = parse_config(NO_DP)
    assert select_model(config, tiny_dataset(), tmp_path, lambda c, v, w: 1 / 0) == (config, None)  # type: ignore[arg-type,return-value]


def test_refused_under_dp_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path / "run.toml", '[model]\ncandidates = ["logistic", "mlp:8"]\n')
    code, text = run_cli(
        [
            "simulate",
            "--dataset",
            "tiny",
            "--rounds",
            "1",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2, text
    assert "Papernot and Steinke" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    client = dataclasses.replace(_config('["logistic"]').client_dp, enabled=True)
    with pytest.raises(ConfigError, match="under DP"):
        select_model(
            dataclasses.replace(_config('["logistic"]'), client_dp=client),
            tiny_dataset(),
            tmp_path,
            lambda c, v, w: 1 / 0,  # type: ignore[arg-type,return-value]
        )


def test_simulate_writes_the_selection_into_the_summary(tmp_path: Path) -> None:
    import json

    config = tiny_config(tmp_path / "run.toml", '[model]\ncandidates = ["logistic", "mlp:4"]\n')
    out = tmp_path / "out"
    code, text = simulate_tiny_plain(config, out, rounds=1)
    assert code == 0, text
    entry = json.loads((out / "summary.json").read_text())["model_selection"]
    assert [r["candidate"] for r in entry["candidates"]] == ["logistic", "mlp:4"]
    assert entry["chosen"] in ("logistic", "mlp:4")
    assert "chose" in text


def test_a_one_class_validation_site_is_left_out_and_named(tmp_path: Path) -> None:
    dataset = tiny_dataset(finetune=False, unseen=False)
    c = dataset.sites[2]
    c = dataclasses.replace(c, y_train=np.ones_like(c.y_train))  # every training row positive
    dataset = dataclasses.replace(dataset, sites=(*dataset.sites[:2], c))

    def run(cfg: SimulationConfig, view: FederatedDataset, where: Path) -> SimulationResult:
        result = _result(view, 0.7, 0.8)
        low = EvalMetrics(n=5, accuracy=0.1, balanced_accuracy=0.1, roc_auc=None)
        sites = tuple(
            dataclasses.replace(s, personalised=low) if s.site == "c" else s for s in result.sites
        )
        return dataclasses.replace(result, sites=sites)

    _, entry = select_model(_config('["logistic"]'), dataset, tmp_path, run)
    assert entry is not None
    assert entry["sites_left_out"] == {"c": "validation rows hold one class"}
    assert entry["candidates"][0]["mean_validation_balanced_accuracy"] == pytest.approx(0.7)
