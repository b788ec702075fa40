from __future__ import annotations

from pathlib import Path

import pytest

from fedmap_secure.config import (
    Method,
    ModelKind,
    PriorForm,
    SimulationConfig,
    config_to_dict,
    load_config,
    parse_config,
)
from fedmap_secure.errors import ConfigError


def test_default_file_matches_dataclass_defaults() -> None:
    assert load_config() == SimulationConfig()


def test_partial_file_overrides_only_given_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[simulation]\nmethod = "fedprox"\nrounds = 3\n'
        '[prior]\nform = "coordinatewise"\nhidden = [8]\n'
    )
    cfg = load_config(path)
    assert cfg.method is Method.FEDPROX
    assert cfg.rounds == 3
    assert cfg.prior.form is PriorForm.COORDINATEWISE
    assert cfg.prior.hidden == (8,)
    assert cfg.model.kind is ModelKind.LOGISTIC
    assert cfg.training == SimulationConfig().training


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[simulation]\nroundz = 3\n", "unknown key simulation.roundz"),
        ("[modell]\n", r"unknown table \[modell\]"),
        ("[training]\nepochs = 1.5\n", "training.epochs must be an integer"),
        ('[simulation]\nmethod = "fedsgd"\n', "simulation.method must be one of"),
        ("[prior]\nalpha = -1.0\n", "prior.alpha"),
        ("[simulation]\nrounds = 0\n", "rounds must be >= 1"),
        ("[model]\nhidden = 3\n", "model.hidden must be a list"),
        ("[training]\nvalidation_fraction = 1.5\n", "validation_fraction"),
        ("rounds = 3\n", "must be a \\[table\\]"),
        ("[simulation\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(text, source="x.toml")


def test_partial_section_keeps_simulation_defaults() -> None:
    cfg = parse_config("[training]\nepochs = 3\n")
    assert cfg.training.epochs == 3
    assert cfg.training.learning_rate == SimulationConfig().training.learning_rate


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_config_to_dict_is_json_ready() -> None:
    d = config_to_dict(SimulationConfig())
    assert d["method"] == "fedmap"
    assert d["prior"]["hidden"] == [64, 32]
