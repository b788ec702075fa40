"""[personalisation] select = "validation": a site chooses its final solve on its own rows."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmap_secure.aggregation import AggregateResult, FloatVector, PlainSum, VectorLayout
from fedmap_secure.config import PersonalisationConfig, SimulationConfig
from fedmap_secure.config.loader import parse_config
from fedmap_secure.config.solve import (
    SolveSelect,
    SolveStart,
    map_token,
    parse_solve_candidate,
)
from fedmap_secure.errors import ConfigError
from fedmap_secure.fedmap.methods import FedMapStrategy
from fedmap_secure.fedmap.models import flat_vector
from fedmap_secure.fedmap.solve_choice import SolveChoice, pick
from fedmap_secure.runtime.inprocess import run_simulation
from fedmap_secure.runtime.results import SimulationResult
from fedmap_secure.training.interface import LocalTrainingResult, PriorFn
from tests.cli_runner import run_cli, simulate_tiny_plain, tiny_config
from tests.synthetic import tiny_dataset
from tests.torch_threads import _single_thread  # noqa: F401
from tests.unit.test_personalisation import _site

SELECT = dataclasses.replace(PersonalisationConfig(), select=SolveSelect.VALIDATION)
DEFAULT = map_token(PersonalisationConfig().prior_precision)
"""The configured solve's token (map:<prior_precision>)."""


# --- configuration ---------------------------------------------------------------------


def test_the_keys_parse_and_the_configured_solve_comes_first() -> None:
    cfg = parse_config(
        '[personalisation]\nselect = "validation"\nprior_precision = 10\n'
        'candidates = ["local", "map:1e3", "finetune", "map:10"]\nselect_fraction = 0.25\n'
    ).personalisation
    assert cfg.select is SolveSelect.VALIDATION
    assert cfg.select_fraction == 0.25
    tokens = [c.token for c in cfg.solve_candidates()]
    assert tokens == ["map:10", "local", "map:1000", "finetune"]  # map:10 once, first
    assert PersonalisationConfig().select is SolveSelect.CLIENT_DP  # chosen on validation


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('candidates = ["map:-1"]', r"'map:-1' is not a candidate"),
        ('candidates = ["map:x"]', r"'map:x' is not a candidate"),
        ('candidates = ["ridge"]', r"'ridge' is not a candidate"),
        ('candidates = ["map:100", "map:1e2"]', r"candidates has duplicates"),
        ("select_fraction = 1.0", r"select_fraction must be in \(0, 1\)"),
        ("select_fraction = 0", r"select_fraction must be in \(0, 1\)"),
        ('select = "validation"\nepochs = 0', r"needs the solve on"),
        ('select = "test"', r"personalisation\.select"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(f"[personalisation]\n{text}\n")


def test_candidates_say_where_they_start_and_which_prior() -> None:
    local, finetune = parse_solve_candidate("local"), parse_solve_candidate("finetune")
    strong = parse_solve_candidate("map:100")
    assert (local.start, local.prior_precision) == (SolveStart.INITIAL, None)
    assert (finetune.start, finetune.prior_precision) == (SolveStart.GAMMA, None)
    assert (strong.start, strong.prior_precision) == (SolveStart.GAMMA, 100.0)
    assert strong.strength > parse_solve_candidate("map:0").strength > finetune.strength
    assert finetune.strength > local.strength


# --- the rule --------------------------------------------------------------------------


def test_the_best_wins_ties_go_to_the_configured_solve_then_the_strongest_prior() -> None:
    c = {t: parse_solve_candidate(t) for t in ("map:10", "map:1000", "map:0", "local")}
    default = c["map:10"]
    assert pick([(default, 0.7), (c["local"], 0.8)], default=default) is c["local"]
    assert pick([(default, 0.8), (c["local"], 0.8)], default=default) is default
    # a tie with a stronger prior still keeps the configured solve
    assert pick([(c["map:1000"], 0.8), (default, 0.8)], default=default) is default
    tied = [(default, 0.6), (c["local"], 0.8), (c["map:0"], 0.8), (c["map:1000"], 0.7)]
    assert pick(tied, default=default) is c["map:0"]


def test_the_record_round_trips() -> None:
    choice = SolveChoice(
        chosen="local", source="validation", validation_rows=9, validation_ba=(("map:10", 0.5),)
    )
    assert SolveChoice.from_dict(json.loads(json.dumps(choice.as_dict()))) == choice


class _Record:
    """A trainer that records where it starts, the prior and the rows it is given."""

    def __init__(self) -> None:
        self.start: np.ndarray | None = None
        self.prior: object = "unset"
        self.rows = 0

    def train(
        self,
        model: torch.nn.Module,
        x_train: np.ndarray,
        y_train: np.ndarray,
        prior: PriorFn | None,
        generator: torch.Generator,
    ) -> LocalTrainingResult:
        self.start, self.prior, self.rows = flat_vector(model.parameters()), prior, len(y_train)
        return LocalTrainingResult(epochs_run=1, steps=1, final_train_loss=0.0)


def test_a_solve_without_prior_from_another_start_on_some_rows() -> None:
    site = _site(20)
    start = np.full(site.gamma_vector().size, 0.125)
    trainer = _Record()
    x, y = site.data.x_train[:12], site.data.y_train[:12]
    site.personalise(
        FedMapStrategy(SimulationConfig()),
        trainer,
        prior_precision=None,
        start=start,
        rows=(x, y),
    )
    assert trainer.prior is None  # neither R_psi nor the Gaussian part
    assert trainer.start is not None
    np.testing.assert_allclose(trainer.start, start)
    assert trainer.rows == 12
    site.personalise(FedMapStrategy(SimulationConfig()), trainer, prior_precision=0.0)
    assert callable(trainer.prior)  # map:0 keeps R_psi / n_k
    np.testing.assert_allclose(trainer.start, site.gamma_vector(), atol=1e-6)
    assert trainer.rows == 20


# --- in a run --------------------------------------------------------------------------


class GarbageGamma:
    """A real plain sum whose model sums are replaced by -5 times themselves: every gamma
    the server forms is the sites' weighted mean model negated and scaled, i.e. a model
    that predicts the wrong class confidently (a deliberately bad gamma)."""

    def __init__(self) -> None:
        self._inner = PlainSum()

    def aggregate(
        self,
        *,
        round_index: int,
        layout: VectorLayout,
        inputs: Mapping[str, FloatVector],
        context: bytes,
    ) -> AggregateResult:
        result = self._inner.aggregate(
            round_index=round_index, layout=layout, inputs=inputs, context=context
        )
        sums = {k: (-5.0 * v if k == "omega_theta" else v) for k, v in result.sums.items()}
        return dataclasses.replace(result, sums=sums)

    def describe(self) -> dict[str, object]:
        return self._inner.describe()


def _run(personalisation: PersonalisationConfig, aggregator: object) -> SimulationResult:
    base = SimulationConfig()
    config = dataclasses.replace(
        base,
        rounds=2,
        evaluate_every=0,
        # larger steps than the defaults: tiny's sites have 1-2 batches per epoch
        personalisation=dataclasses.replace(personalisation, learning_rate=0.05),
        training=dataclasses.replace(base.training, learning_rate=0.05),
    )
    dataset = tiny_dataset(finetune=False, unseen=False)
    return run_simulation(config, dataset, aggregator)  # type: ignore[arg-type]


def _ba(result: SimulationResult) -> dict[str, float]:
    out = {}
    for s in result.sites:
        assert s.personalised is not None
        assert s.personalised.balanced_accuracy is not None
        out[s.site] = s.personalised.balanced_accuracy
    return out


def test_with_a_garbage_gamma_each_site_chooses_a_weak_prior_and_beats_the_fixed_solve() -> None:
    fixed = _run(PersonalisationConfig(), GarbageGamma())
    chosen = _run(SELECT, GarbageGamma())
    for s in fixed.sites:  # the configured solve stays near the garbage gamma
        assert s.personalisation == SolveChoice(chosen=DEFAULT, source="configured")
    for s in chosen.sites:
        record = s.personalisation
        assert record is not None
        assert record.source == "validation"
        ba = dict(record.validation_ba)
        assert next(iter(ba)) == DEFAULT  # the configured solve first
        assert set(ba) == {"map:1000", "map:100", "map:10", "map:0", "local"}
        assert record.chosen in {"map:0", "local"}, ba  # a weak prior, or none
        assert ba[record.chosen] > ba[DEFAULT] + 0.1
    before, after = _ba(fixed), _ba(chosen)
    assert np.mean(list(before.values())) < 0.55, before
    assert all(after[name] >= before[name] for name in before), (before, after)
    assert np.mean(list(after.values())) > np.mean(list(before.values())) + 0.2


def test_choosing_the_configured_solve_refits_it_on_all_rows_as_without_select() -> None:
    only_default = dataclasses.replace(SELECT, candidates=())
    plain = _run(PersonalisationConfig(), PlainSum())
    chosen = _run(only_default, PlainSum())
    for a, b in zip(plain.sites, chosen.sites, strict=True):
        assert b.personalisation is not None
        assert (b.personalisation.chosen, b.personalisation.source) == (DEFAULT, "validation")
        assert b.personalisation.validation_rows > 0
        assert a.personalised == b.personalised  # the same model: refit on every row


def test_a_split_missing_a_class_keeps_the_configured_solve_and_says_why() -> None:
    dataset = tiny_dataset(finetune=False, unseen=False)
    c = dataset.sites[2]
    y = np.zeros_like(c.y_train)
    y[0] = 1  # one positive row: either the held-out rows or the rest miss the class
    one_positive = dataclasses.replace(c, y_train=y)
    dataset = dataclasses.replace(dataset, sites=(*dataset.sites[:2], one_positive))
    config = dataclasses.replace(
        SimulationConfig(), rounds=1, evaluate_every=0, personalisation=SELECT
    )
    result = run_simulation(config, dataset, PlainSum())
    record = {s.site: s.personalisation for s in result.sites}["c"]
    assert record is not None
    assert record.chosen == DEFAULT
    assert record.source in (
        "configured: the 5 held-out rows hold 1 of 2 classes",
        "configured: the 20 rows left to fit on hold 1 of 2 classes",
    )
    assert record.validation_ba == ()


def test_summary_json_records_each_sites_choice(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "run.toml", '[personalisation]\nselect = "validation"\n')
    code, text = simulate_tiny_plain(config, tmp_path / "out", rounds=1)
    assert code == 0, text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    by_site = {s["site"]: s["personalisation"] for s in summary["sites"]}
    for name in ("a", "b", "c"):
        assert by_site[name]["source"] == "validation"
        assert by_site[name]["chosen"] in by_site[name]["validation_ba"]
    assert by_site["d"] is None  # the fine-tune tier runs no solve


def test_client_dp_mode_chooses_only_in_runs_with_client_level_dp(tmp_path: Path) -> None:
    assert SolveSelect.CLIENT_DP.applies(client_dp=True)
    assert not SolveSelect.CLIENT_DP.applies(client_dp=False)
    assert SolveSelect.VALIDATION.applies(client_dp=False)
    assert not SolveSelect.NONE.applies(client_dp=True)
    config = tiny_config(tmp_path / "run.toml", '[personalisation]\nselect = "client_dp"\n')
    sources = {}
    for label, flags in (("plain", ()), ("client", ("--client-epsilon", "8"))):
        args = ["simulate", "--dataset", "tiny", "--rounds", "1", "--no-dp", *flags]
        code, text = run_cli([*args, "--config", str(config), "--out", str(tmp_path / label)])
        assert code == 0, text
        summary = json.loads((tmp_path / label / "summary.json").read_text())
        sources[label] = {s["personalisation"]["source"] for s in summary["sites"][:3]}
    assert sources == {"plain": {"configured"}, "client": {"validation"}}
