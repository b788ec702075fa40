"""DP personalisation (issue 16): a DP-SGD site's personalised model from its last K rounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.schema import (
    Method,
    ModelConfig,
    PriorConfig,
    ScoreConfig,
    SimulationConfig,
)
from fedmap_secure.data.types import Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.dp_personalisation import (
    PersonalisationRecord,
    james_stein_factor,
    shrunk_average,
)
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import GlobalState, make_strategy
from fedmap_secure.fedmap.models import build_model, flat_vector, load_flat_vector
from fedmap_secure.fedmap.site import Site, make_generator
from fedmap_secure.model_files import load_model
from fedmap_secure.runtime.records import read_records, write_records
from fedmap_secure.runtime.results import SiteResult
from fedmap_secure.training.interface import DpPersonalised, LocalTrainingResult, PriorFn
from tests.cli_runner import run_cli, tiny_config
from tests.synthetic import tiny_dataset


class _SetTo:
    """A trainer that sets every parameter to the next value of ``values``."""

    def __init__(self, values: list[float]) -> None:
        self.values = list(values)

    def train(
        self,
        model: torch.nn.Module,
        x_train: npt.NDArray[np.float32],
        y_train: npt.NDArray[np.int64],
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> LocalTrainingResult:
        value = self.values.pop(0)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
        return LocalTrainingResult(epochs_run=1, steps=1, final_train_loss=0.0)


def _site(
    average_rounds: int,
    values: list[float],
    personalised: DpPersonalised = DpPersonalised.AVERAGE,
) -> Site:
    data = tiny_dataset().sites[0]
    model = build_model(ModelConfig(), n_features=4, n_classes=2, seed=0)
    site = Site(
        data=data,
        model=model,
        gamma_model=build_model(ModelConfig(), n_features=4, n_classes=2, seed=0),
        prior=None,
        trainer=_SetTo(values),
        generator=make_generator(0),
        score_config=ScoreConfig(),
        n_classes=2,
        personalised=personalised,
        average_rounds=average_rounds,
    )
    site.receive(GlobalState(round_index=0, gamma=flat_vector(model.parameters())))
    return site


def _train(site: Site, times: int) -> None:
    strategy = make_strategy(SimulationConfig(method=Method.FEDAVG))
    for _ in range(times):
        site.train(strategy, start_from_gamma=True)


def test_personalised_model_is_the_mean_of_the_last_k_iterates() -> None:
    site = _site(3, [1.0, 2.0, 4.0, 8.0, 16.0])
    _train(site, 2)
    np.testing.assert_allclose(flat_vector(site.personalised_model.parameters()), 1.5)
    _train(site, 3)  # iterates 1, 2, 4, 8, 16: the last three are averaged
    np.testing.assert_allclose(flat_vector(site.personalised_model.parameters()), 28.0 / 3)
    # what the site contributes (and scores) is the last iterate, not the average
    np.testing.assert_allclose(site.theta_vector(), 16.0)


def test_last_is_the_trained_model_itself() -> None:
    site = _site(2, [1.0, 2.0], DpPersonalised.LAST)
    _train(site, 2)
    assert site.personalised_model is site.model
    evaluated = site.evaluate_personalised()
    assert evaluated is not None


def test_evaluation_uses_the_averaged_model() -> None:
    site = _site(2, [3.0, -3.0])
    _train(site, 2)  # the mean is the zero model: every probability is 1/2
    averaged = site.personalised_model
    np.testing.assert_allclose(flat_vector(averaged.parameters()), 0.0)
    with torch.no_grad():
        proba = torch.softmax(averaged(torch.from_numpy(site.data.x_test)), dim=1)
    np.testing.assert_allclose(proba.numpy(), 0.5)


def test_options_are_validated_and_off_by_default() -> None:
    with pytest.raises(ConfigError, match="dp_average_rounds"):
        parse_config("[training]\ndp_average_rounds = 1\n")
    with pytest.raises(ConfigError, match="dp_personalised"):
        parse_config('[training]\ndp_personalised = "median"\n')
    cfg = parse_config('[training]\ndp_personalised = "shrunk"\ndp_average_rounds = 4\n')
    assert cfg.training.dp_personalised is DpPersonalised.SHRUNK
    assert cfg.training.dp_average_rounds == 4
    assert SimulationConfig().training.dp_personalised is DpPersonalised.AVERAGE


def test_james_stein_keeps_a_consistent_displacement_and_drops_pure_noise() -> None:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=30)
    consistent = direction + 0.01 * rng.normal(size=(10, 30))
    assert james_stein_factor(consistent) > 0.99
    noise = rng.normal(size=(10, 30))  # no common direction: the mean is noise
    assert james_stein_factor(noise) < 0.5
    assert james_stein_factor(np.zeros((10, 30))) == 0.0
    assert james_stein_factor(noise[:1]) == 1.0  # one round: nothing to estimate the noise by
    assert james_stein_factor(noise[:, :2]) == 1.0  # p < 3: no Stein shrinkage


@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(2, 8),
    p=st.integers(3, 12),
    scale=st.floats(0.0, 3.0),
)
def test_shrunk_model_lies_between_the_mean_global_and_the_tail_average(
    seed: int, k: int, p: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    gammas = list(rng.normal(size=(k, p)))
    thetas = [g + scale * rng.normal(size=p) + scale for g in gammas]
    made = shrunk_average(thetas, gammas)
    assert made.shrinkage is not None
    assert 0.0 <= made.shrinkage <= 1.0
    mean_gamma, mean_theta = np.mean(gammas, axis=0), np.mean(thetas, axis=0)
    expected = mean_gamma + made.shrinkage * (mean_theta - mean_gamma)
    np.testing.assert_allclose(made.theta, expected, atol=1e-12)


def test_site_shrinks_a_noise_only_displacement_to_the_global_model() -> None:
    rng = np.random.default_rng(1)
    site = _site(6, [], DpPersonalised.SHRUNK)
    gamma = site.gamma_vector()
    noise = list(rng.normal(size=(6, gamma.size)))

    class _Noisy:
        def train(self, model: torch.nn.Module, *args: object) -> LocalTrainingResult:
            load_flat_vector(model.parameters(), gamma + noise.pop(0))
            return LocalTrainingResult(epochs_run=1, steps=1, final_train_loss=0.0)

    site._trainer = _Noisy()
    _train(site, 6)
    made = site.dp_personalisation
    kept = flat_vector(site.personalised_model.parameters())
    assert made is not None
    assert made.shrinkage is not None
    assert made.shrinkage < 0.5
    # far closer to gamma than the last DP-trained model is
    assert np.linalg.norm(kept - gamma) < 0.5 * np.linalg.norm(site.theta_vector() - gamma)


LAST = '[training]\ndp_personalised = "last"\n'
SHRUNK_2 = '[training]\ndp_personalised = "shrunk"\ndp_average_rounds = 2\n'


def _simulate(tmp_path: Path, name: str, text: str, *flags: str) -> tuple[dict[str, Any], Path]:
    config = tiny_config(tmp_path / f"{name}.toml", text)
    out = tmp_path / name
    args = ["simulate", "--dataset", "tiny", "--rounds", "2", "--no-secagg", "--seed", "1"]
    code, console = run_cli([*args, *flags, "--config", str(config), "--out", str(out)])
    assert code == 0, console
    return json.loads((out / "summary.json").read_text()), out


def _weights(out: Path, site: str) -> npt.NDArray[np.float64]:
    model = load_model(out / "models" / f"site-{site}.json")
    return flat_vector(model.parameters())


def test_dp_run_averages_the_personalised_model_and_leaves_the_federation_alone(
    tmp_path: Path,
) -> None:
    dp = ("--epsilon", "8", "--reproducible-noise")
    plain, out_plain = _simulate(tmp_path, "k1", LAST, *dp)
    avg, out_avg = _simulate(tmp_path, "k3", SHRUNK_2, *dp)
    # the contributions are the last iterates either way: the same global model, same charge
    plain_sites = {s["site"]: s for s in plain["sites"]}
    avg_sites = {s["site"]: s for s in avg["sites"]}
    for name in ("a", "b", "c"):
        assert avg_sites[name]["global"] == plain_sites[name]["global"]
        assert not np.allclose(_weights(out_avg, name), _weights(out_plain, name))
    spent = {
        run: {
            k: v["epsilon_spent"]
            for k, v in summary["privacy"]["differential_privacy"]["sites"].items()
        }
        for run, summary in (("k1", plain), ("k3", avg))
    }
    assert spent["k3"] == spent["k1"]  # post-processing: nothing more is charged
    record = avg_sites["a"]["dp_personalisation"]
    assert record["rule"] == "shrunk"
    assert record["rounds"] == 2
    assert 0.0 <= record["shrinkage"] <= 1.0
    assert plain_sites["a"]["dp_personalisation"] is None


def test_options_are_ignored_without_dp(tmp_path: Path) -> None:
    _, out_plain = _simulate(tmp_path, "k1", "", "--no-dp")
    both = SHRUNK_2 + "[score]\ndp_reliability = true\n"
    avg, out_avg = _simulate(tmp_path, "k3", both, "--no-dp")
    assert all(s["dp_personalisation"] is None for s in avg["sites"])
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(_weights(out_avg, name), _weights(out_plain, name))


def test_site_records_keep_how_the_model_was_formed(tmp_path: Path) -> None:
    """The grpc simulation reads each site's records back: the rule survives the file."""
    record = PersonalisationRecord(rule="shrunk", rounds=10, shrinkage=0.25)
    result = SiteResult(
        site="a",
        tier=Tier.TRAIN,
        n_train=10,
        n_test=5,
        personalised=None,
        global_=None,
        dp_personalisation=record,
    )
    write_records(tmp_path / "r.json", result, [])
    assert read_records(tmp_path / "r.json")[0].dp_personalisation == record


def _scored_site(reliability: bool, displacements: list[npt.NDArray[np.float64]]) -> Site:
    data = tiny_dataset().sites[0]
    model = build_model(ModelConfig(), n_features=4, n_classes=2, seed=0)
    gamma = flat_vector(model.parameters())
    steps = list(displacements)

    class _Step:
        def train(self, model: torch.nn.Module, *args: object) -> LocalTrainingResult:
            load_flat_vector(model.parameters(), gamma + steps.pop(0))
            return LocalTrainingResult(epochs_run=1, steps=1, final_train_loss=0.0)

    site = Site(
        data=data,
        model=model,
        gamma_model=build_model(ModelConfig(), n_features=4, n_classes=2, seed=0),
        prior=ConvexPrior([int(p.numel()) for p in model.parameters()], PriorConfig(), seed=0),
        trainer=_Step(),
        generator=make_generator(0),
        score_config=ScoreConfig(),
        n_classes=2,
        average_rounds=4,
        reliability=reliability,
    )
    site.receive(GlobalState(round_index=0, gamma=gamma))
    strategy = make_strategy(SimulationConfig())
    for _ in displacements:
        site.train(strategy, start_from_gamma=True)
    return site


def test_reliability_scales_omega_by_the_share_that_is_not_noise() -> None:
    rng = np.random.default_rng(3)
    noise = list(0.3 * rng.normal(size=(4, 10)))
    plain, reliable = _scored_site(False, noise), _scored_site(True, noise)
    factor = james_stein_factor(np.stack(noise))
    assert factor < 0.5
    omega = plain.score()[0]
    assert reliable.reliability_factor is None  # computed with the score
    assert reliable.score()[0] == pytest.approx(max(ScoreConfig().omega_min, omega * factor))
    assert reliable.reliability_factor == pytest.approx(factor)
    consistent = [np.full(10, 0.3) + 0.001 * rng.normal(size=10) for _ in range(4)]
    steady_plain, steady = _scored_site(False, consistent), _scored_site(True, consistent)
    assert steady.score()[0] == pytest.approx(steady_plain.score()[0], rel=0.01)
