"""The public Python API end to end: a user-defined module with DP-SGD and secure aggregation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import fedmap_secure as fs
from fedmap_secure.config.schema import PriorConfig, PriorForm
from tests.api_models import TinyCnn, batchnorm_net


def _sites(n_sites: int = 4, n: int = 24) -> list[fs.Site]:
    rng = np.random.default_rng(0)
    sites = []
    for k in range(n_sites):
        y = rng.integers(0, 3, size=n)
        x = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
        x[:, 0, 0, 0] += 2.0 * y  # learnable
        sites.append(fs.Site.from_tensors(f"s{k}", x[: n - 8], y[: n - 8], x[n - 8 :], y[n - 8 :]))
    return sites


def _config(**privacy: object) -> fs.SimulationConfig:
    config = fs.load_config()
    return dataclasses.replace(
        config,
        rounds=2,
        prior=PriorConfig(form=PriorForm.COORDINATEWISE),
        privacy=dataclasses.replace(config.privacy, steps_per_round=2, **privacy),  # type: ignore[arg-type]
    )


def test_custom_cnn_with_dp_and_secure_aggregation(tmp_path: Path) -> None:
    run = fs.simulate(_config(), _sites(), model=lambda: TinyCnn(), out=tmp_path)
    assert set(run.sites) == {"s0", "s1", "s2", "s3"}
    for site in run.sites.values():
        assert site.personalised is not None
        assert site.global_ is not None
        assert 0.0 <= site.personalised.balanced_accuracy <= 1.0
        assert site.epsilon_spent is not None
        assert 0.0 < site.epsilon_spent <= 4.0
    summary = json.loads(run.summary_path.read_text())
    assert summary["privacy"]["secure_aggregation"]["protocol"].startswith("SecAgg")
    assert summary["privacy"]["differential_privacy"] is not None
    assert run.metrics_path.is_file()


def test_batchnorm_is_refused_unless_fixed(tmp_path: Path) -> None:
    sites = _sites()
    with pytest.raises(fs.ConfigError, match=r"fix_model=True"):
        fs.simulate(_config(), sites, model=batchnorm_net, out=tmp_path / "a")
    run = fs.simulate(_config(), sites, model=batchnorm_net, fix_model=True, out=tmp_path / "b")
    assert all(s.epsilon_spent for s in run.sites.values())


def test_grpc_refuses_a_lambda_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(fs.ConfigError, match=r"not importable"):
        fs.simulate(_config(), _sites(), model=lambda: TinyCnn(), transport="grpc", out=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_custom_cnn_over_grpc_site_processes(tmp_path: Path) -> None:
    run = fs.simulate(
        _config(),
        _sites(),
        model="tests.api_models:tiny_cnn",
        transport="grpc",
        insecure=True,
        out=tmp_path,
    )
    assert set(run.sites) == {"s0", "s1", "s2", "s3"}
    for site in run.sites.values():
        assert site.personalised is not None
        assert site.epsilon_spent is not None
        assert 0.0 < site.epsilon_spent <= 4.0
