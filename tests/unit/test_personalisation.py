"""[personalisation]: FedMAP's final MAP solve per non-private training site (issue 16)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmap_secure.config import PersonalisationConfig, SimulationConfig
from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.schema import PriorConfig, ScoreConfig
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.icnn import ConvexPrior
from fedmap_secure.fedmap.methods import FedMapStrategy, GlobalState
from fedmap_secure.fedmap.models import build_model, flat_vector
from fedmap_secure.fedmap.site import Site, make_generator
from fedmap_secure.training.interface import LocalTrainingConfig, LocalTrainingResult, PriorFn
from fedmap_secure.training.local import AdamMapTrainer
from tests.cli_runner import run_cli, simulate_tiny_plain, tiny_config

N_FEATURES = 3


def _site(n: int, seed: int = 0) -> Site:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    data = SiteData(name="s", tier=Tier.TRAIN, x_train=x, y_train=y, x_test=x, y_test=y)
    config = SimulationConfig()
    model = build_model(config.model, n_features=N_FEATURES, n_classes=2, seed=0)
    gamma_model = build_model(config.model, n_features=N_FEATURES, n_classes=2, seed=0)
    prior = ConvexPrior([int(p.numel()) for p in model.parameters()], PriorConfig(), seed=0)
    site = Site(
        data=data,
        model=model,
        gamma_model=gamma_model,
        prior=prior,
        trainer=None,
        generator=make_generator(seed),
        score_config=ScoreConfig(),
        n_classes=2,
    )
    gamma = np.linspace(-0.5, 0.5, flat_vector(model.parameters()).size)
    site.receive(GlobalState(round_index=3, gamma=gamma, psi=prior.psi()))
    return site


class _Capture:
    """A trainer that records the prior it is given and moves theta by a fixed step."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.start: np.ndarray | None = None
        self.prior_at_step: float | None = None

    def train(
        self,
        model: torch.nn.Module,
        x_train: np.ndarray,
        y_train: np.ndarray,
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> LocalTrainingResult:
        assert prior is not None
        self.start = flat_vector(model.parameters())
        with torch.no_grad():
            for p in model.parameters():
                p.add_(self.step)
        self.prior_at_step = float(prior().detach())
        return LocalTrainingResult(epochs_run=1, steps=1, final_train_loss=0.0)


def test_config_refuses_negative_values() -> None:
    with pytest.raises(ConfigError, match=r"personalisation\.epochs"):
        parse_config("[personalisation]\nepochs = -1\n")
    with pytest.raises(ConfigError, match=r"personalisation\.prior_precision"):
        parse_config("[personalisation]\nprior_precision = -0.5\n")
    cfg = parse_config("[personalisation]\nepochs = 7\nprior_precision = 3\n")
    assert cfg.personalisation == PersonalisationConfig(epochs=7, prior_precision=3.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("learning_rate = 0", r"personalisation\.learning_rate must be a finite number > 0"),
        ("learning_rate = -1e-2", r"personalisation\.learning_rate must be a finite number > 0"),
        ("patience = -1", r"personalisation\.patience must be >= 0"),
        ("early_stopping = false\npatience = 3", r"patience needs early_stopping = true"),
        ("early_stopping = 1", r"personalisation\.early_stopping must be true or false"),
    ],
)
def test_config_refuses_bad_solve_knobs(table: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"[personalisation]\n{table}\n")


def test_the_solve_inherits_the_training_knobs_unless_it_sets_its_own() -> None:
    training = LocalTrainingConfig(epochs=2, learning_rate=3e-3, patience=2)
    inherited = PersonalisationConfig(learning_rate=None, early_stopping=True).trainer_config(
        training
    )
    assert (inherited.epochs, inherited.learning_rate, inherited.patience) == (20, 3e-3, 2)
    assert inherited.validation_fraction == training.validation_fraction
    cfg = parse_config(
        "[personalisation]\nepochs = 50\nlearning_rate = 3e-2\n"
        "early_stopping = true\npatience = 5\n"
    )
    own = cfg.personalisation.trainer_config(training)
    assert (own.epochs, own.learning_rate, own.patience) == (50, 3e-2, 5)
    assert own.validation_fraction == training.validation_fraction
    assert own.class_weighting is training.class_weighting  # the rest is [training]'s
    no_stop = PersonalisationConfig(early_stopping=False).trainer_config(training)
    assert PersonalisationConfig() == PersonalisationConfig(
        epochs=20, prior_precision=100.0, learning_rate=1e-2, early_stopping=False
    )  # the validation-chosen defaults (docs/TUNING.md)
    assert no_stop.validation_fraction == 0.0  # every training row, every epoch


def test_the_site_runs_the_solve_with_its_own_knobs() -> None:
    """The solve's trainer is built from [personalisation], the rounds' from [training]."""
    import dataclasses

    from fedmap_secure.aggregation import PlainSum
    from fedmap_secure.data.types import SiteData as Data
    from fedmap_secure.runtime.inprocess import run_simulation
    from tests.synthetic import tiny_dataset

    seen: list[LocalTrainingConfig] = []

    def factory(site: Data, training: LocalTrainingConfig) -> AdamMapTrainer:
        seen.append(training)
        return AdamMapTrainer(training)

    personalisation = PersonalisationConfig(
        epochs=3, learning_rate=2e-2, early_stopping=False, prior_precision=1.0
    )
    config = dataclasses.replace(
        SimulationConfig(), rounds=1, evaluate_every=0, personalisation=personalisation
    )
    run_simulation(
        config, tiny_dataset(finetune=False, unseen=False), PlainSum(), trainer_factory=factory
    )
    solves = [c for c in seen if c.epochs == 3]
    assert len(solves) == 3  # one per training site
    assert all(c.learning_rate == 2e-2 and c.validation_fraction == 0.0 for c in solves)
    rounds = [c for c in seen if c.epochs == config.training.epochs]
    assert rounds
    assert all(c == config.training for c in rounds)


@pytest.mark.parametrize(("n", "precision"), [(10, 0.0), (10, 4.0), (1000, 4.0)])
def test_the_solve_starts_at_gamma_under_the_prior_divided_by_n_k(n: int, precision: float) -> None:
    """The trainer minimises mean loss + (R(theta; gamma) + lambda/2 ||theta - gamma||^2) / n_k."""
    site = _site(n)
    gamma = site.gamma_vector()
    trainer = _Capture(step=0.25)
    site.personalise(FedMapStrategy(SimulationConfig()), trainer, prior_precision=precision)
    assert trainer.start is not None
    np.testing.assert_allclose(trainer.start, gamma, atol=1e-6)
    prior = site.prior
    assert prior is not None
    theta = list(site.model.parameters())
    gamma_tensors = [g.detach().clone() for g in site._gamma_model.parameters()]
    with torch.no_grad():
        r = float(prior(theta, gamma_tensors))
    quad = float(((flat_vector(site.model.parameters()) - gamma) ** 2).sum())
    expected = (r + 0.5 * precision * quad) / n
    assert trainer.prior_at_step == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert site.trained


def test_a_strong_prior_keeps_theta_near_gamma_a_weak_one_follows_the_data() -> None:
    config = LocalTrainingConfig(epochs=30, learning_rate=5e-2, validation_fraction=0.0)
    moved = {}
    for precision in (0.0, 1e5):
        site = _site(60)
        gamma = site.gamma_vector()
        site.personalise(
            FedMapStrategy(SimulationConfig()), AdamMapTrainer(config), prior_precision=precision
        )
        moved[precision] = float(np.linalg.norm(site.theta_vector() - gamma))
    assert moved[0.0] > 0.5
    assert moved[1e5] < 0.05 * moved[0.0]


def _phases(out: Path) -> dict[str, set[str]]:
    with (out / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    phases: dict[str, set[str]] = {}
    for row in rows:
        phases.setdefault(row["phase"], set()).add(row["site"])
    return phases


def test_every_training_site_personalises_after_the_last_round(tmp_path: Path) -> None:
    code, text = simulate_tiny_plain(tiny_config(tmp_path / "run.toml"), tmp_path / "on", rounds=2)
    assert code == 0, text
    phases = _phases(tmp_path / "on")
    assert phases["personalise"] == {"a", "b", "c"}  # not the fine-tune tier, not unseen
    off = tiny_config(tmp_path / "off.toml", "[personalisation]\nepochs = 0\n")
    code, text = simulate_tiny_plain(off, tmp_path / "off", rounds=2)
    assert code == 0, text
    assert "personalise" not in _phases(tmp_path / "off")


def test_other_methods_do_not_personalise(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run.toml")
    code, text = simulate_tiny_plain(config, tmp_path / "out", extra=("--method", "fedprox"))
    assert code == 0, text
    assert "personalise" not in _phases(tmp_path / "out")


def test_a_record_level_dp_site_keeps_its_last_round_model_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config(tmp_path / "run.toml")
    args = ["simulate", "--dataset", "tiny", "--rounds", "1", "--no-secagg", "--epsilon", "8"]
    with caplog.at_level(logging.WARNING, logger="fedmap_secure.runtime.site"):
        code, text = run_cli([*args, "--config", str(config), "--out", str(tmp_path / "out")])
    assert code == 0, text
    assert "personalise" not in _phases(tmp_path / "out")
    assert "[personalisation] not applied under record-level DP" in caplog.text


def test_a_site_without_both_classes_keeps_its_last_round_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Heart's Switzerland (30 positive training rows): the solve would only push the
    intercept toward the one class; the site keeps its last round's model and says so."""
    import dataclasses

    from fedmap_secure.aggregation import PlainSum
    from fedmap_secure.runtime.inprocess import run_simulation
    from tests.synthetic import tiny_dataset

    dataset = tiny_dataset(finetune=False, unseen=False)
    one_class = dataclasses.replace(
        dataset.sites[2], y_train=np.ones_like(dataset.sites[2].y_train)
    )
    dataset = dataclasses.replace(dataset, sites=(*dataset.sites[:2], one_class))
    config = dataclasses.replace(SimulationConfig(), rounds=1, evaluate_every=0)
    with caplog.at_level(logging.WARNING, logger="fedmap_secure.runtime.site"):
        result = run_simulation(config, dataset, PlainSum())
    personalised = {r.site for r in result.reports if r.phase.value == "personalise"}
    assert personalised == {"a", "b"}
    assert "site c: [personalisation] not applied: its training rows hold 1 of 2" in caplog.text
