"""Issue 13: the run's feature contract (ordered names + schema digest) and the site check."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmap_secure.config.loader import load_config, parse_config
from fedmap_secure.config.schema import FeaturesConfig
from fedmap_secure.data.contract import bind_config, bind_features, check_site_schema
from fedmap_secure.data.heart import heart_schema
from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.errors import ConfigError, DataError
from fedmap_secure.runtime.announcement import config_from_json, config_json


def _schema(scale: float = 10.0) -> FeatureSchema:
    return FeatureSchema(
        features=(
            FeatureSpec(name="age", low=0.0, high=100.0, centre=50.0, scale=scale),
            FeatureSpec(name="chol", low=100.0, high=400.0, centre=250.0, scale=50.0),
        )
    )


def test_an_empty_contract_is_filled_from_the_dataset_schema_and_travels() -> None:
    config = bind_config(load_config(), heart_schema(), source="heart")
    assert config.features.names == heart_schema().names
    assert config.features.schema_digest == heart_schema().digest()
    # the announced configuration (what sites receive) carries it
    assert config_from_json(config_json(config)).features == config.features


def test_a_declared_contract_refuses_other_names_order_or_constants() -> None:
    bound = bind_features(FeaturesConfig(), _schema(), source="x")
    assert bind_features(bound, _schema(), source="x") == bound
    swapped = FeatureSchema(features=_schema().features[::-1])
    with pytest.raises(ConfigError, match=r"names or order"):
        bind_features(bound, swapped, source="csv:site")
    with pytest.raises(DataError, match=r"csv:site: feature schema digest .* differs"):
        bind_features(bound, _schema(scale=5.0), source="csv:site")


def test_a_site_checks_the_announced_contract() -> None:
    bound = bind_features(FeaturesConfig(), _schema(), source="x")
    check_site_schema(bound, _schema(), site="cleveland")
    with pytest.raises(DataError, match="site 'va': feature schema digest"):
        check_site_schema(bound, _schema(scale=2.0), site="va")
    with pytest.raises(ConfigError, match="announces no feature schema"):
        check_site_schema(FeaturesConfig(), _schema(), site="va")


def test_features_table_in_toml(tmp_path: Path) -> None:
    digest = _schema().digest()
    text = f'[features]\nnames = ["age", "chol"]\nschema_digest = "{digest}"\n'
    config = parse_config(text)
    assert config.features == FeaturesConfig(names=("age", "chol"), schema_digest=digest)
    with pytest.raises(ConfigError, match="schema_digest"):
        parse_config('[features]\nschema_digest = "abc"\n')
    with pytest.raises(ConfigError, match="duplicates"):
        parse_config('[features]\nnames = ["a", "a"]\n')
