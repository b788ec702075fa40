from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fedmap_secure.data import SyntheticConfig, Tier, load_dataset
from fedmap_secure.data.synthetic import make_synthetic
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import ConfigError


def _flat(ds: FederatedDataset) -> list[np.ndarray[Any, Any]]:
    return [a for s in ds.sites for a in (s.x_train, s.y_train, s.x_test, s.y_test)]


def test_defaults_eight_sites_float32_int64() -> None:
    ds = load_dataset("synthetic")
    assert len(ds.sites) == 8
    assert ds.n_classes == 2
    assert ds.feature_names == tuple(f"x{j}" for j in range(10))
    for site in ds.sites:
        assert site.tier is Tier.TRAIN
        assert site.x_train.dtype == np.float32
        assert site.y_train.dtype == np.int64
        assert set(site.y_train.tolist()) <= {0, 1}
        assert site.n_train >= 1
        assert site.n_test >= 1
    total = sum(s.n_train + s.n_test for s in ds.sites)
    assert 8 * 500 * 0.6 < total < 8 * 500 * 1.6


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b = load_dataset("synthetic", seed=7), load_dataset("synthetic", seed=7)
    for u, v in zip(_flat(a), _flat(b), strict=True):
        np.testing.assert_array_equal(u, v)
    c = load_dataset("synthetic", seed=8)
    assert not np.array_equal(a.sites[0].x_train[:5], c.sites[0].x_train[:5])


def test_a_site_does_not_depend_on_how_many_sites_follow() -> None:
    small = make_synthetic(SyntheticConfig(n_sites=3), rng=np.random.default_rng(1))
    large = make_synthetic(SyntheticConfig(n_sites=5), rng=np.random.default_rng(1))
    np.testing.assert_array_equal(small.sites[2].x_test, large.sites[2].x_test)


def test_benchmark_scale_twenty_sites_of_about_2000_rows() -> None:
    config = SyntheticConfig(n_sites=20, mean_rows=2000, quantity_skew=0.0)
    ds = load_dataset("synthetic", synthetic=config, seed=3)
    assert [s.name for s in ds.sites][:2] == ["site_00", "site_01"]
    for site in ds.sites:
        assert (site.n_train, site.n_test) == (1400, 600)


def test_quantity_skew_spreads_site_sizes() -> None:
    config = SyntheticConfig(n_sites=30, quantity_skew=1.0)
    sizes = [
        s.n_train + s.n_test for s in make_synthetic(config, rng=np.random.default_rng(0)).sites
    ]
    assert min(sizes) >= config.min_rows
    assert max(sizes) > 3 * min(sizes)


def test_label_skew_zero_gives_the_class_prior_everywhere() -> None:
    config = SyntheticConfig(
        n_sites=4, mean_rows=4000, quantity_skew=0.0, label_skew=0.0, class_prior=0.3
    )
    for site in make_synthetic(config, rng=np.random.default_rng(2)).sites:
        y = np.concatenate([site.y_train, site.y_test])
        assert abs(y.mean() - 0.3) < 0.03


def test_label_skew_varies_class_priors() -> None:
    config = SyntheticConfig(n_sites=12, mean_rows=2000, quantity_skew=0.0, label_skew=1.5)
    rates = [
        np.concatenate([s.y_train, s.y_test]).mean()
        for s in make_synthetic(config, rng=np.random.default_rng(4)).sites
    ]
    assert max(rates) - min(rates) > 0.3


def test_feature_shift_moves_site_means() -> None:
    def site_means(shift: float) -> np.ndarray[Any, Any]:
        config = SyntheticConfig(n_sites=6, mean_rows=2000, quantity_skew=0.0, feature_shift=shift)
        ds = make_synthetic(config, rng=np.random.default_rng(5))
        return np.stack([s.x_train.mean(axis=0) for s in ds.sites])

    assert np.abs(site_means(0.0)).max() < 0.15
    assert np.abs(site_means(2.0)).max() > 1.0


def test_tiers_and_unseen_sites_have_no_training_rows() -> None:
    config = SyntheticConfig(n_sites=6, n_finetune_sites=2, n_unseen_sites=1)
    ds = make_synthetic(config, rng=np.random.default_rng(0))
    assert [s.tier for s in ds.sites] == [Tier.TRAIN] * 3 + [Tier.FINETUNE] * 2 + [Tier.UNSEEN]
    assert ds.sites[-1].n_train == 0
    assert ds.sites[-1].n_test >= config.min_rows


def test_optional_standardisation_uses_the_config_derived_schema_only() -> None:
    config = SyntheticConfig(n_sites=3, feature_shift=3.0, standardize=True, n_unseen_sites=1)
    raw = make_synthetic(
        SyntheticConfig(n_sites=3, feature_shift=3.0, n_unseen_sites=1),
        rng=np.random.default_rng(0),
    )
    ds = make_synthetic(config, rng=np.random.default_rng(0))
    scale = np.sqrt(1.0 + 3.0**2)
    assert ds.schema.features[0].scale == pytest.approx(scale)
    assert raw.schema == raw.schema.identity(raw.feature_names)
    for plain, scaled in zip(raw.sites, ds.sites, strict=True):
        # one public constant for every site: the feature shift between sites survives
        np.testing.assert_allclose(scaled.x_train, plain.x_train / scale, rtol=1e-5)
        np.testing.assert_allclose(scaled.x_test, plain.x_test / scale, rtol=1e-5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_sites", 0),
        ("n_sites", 2.0),
        ("min_rows", 3),
        ("mean_rows", 10),
        ("n_features", 0),
        ("class_prior", 1.0),
        ("test_fraction", 0.0),
        ("label_skew", -0.1),
        ("feature_shift", float("nan")),
        ("concept_shift", True),
        ("standardize", 1),
        ("n_unseen_sites", 8),
    ],
)
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    changes: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=field if field != "n_unseen_sites" else "training site"):
        dataclasses.replace(SyntheticConfig(), **changes)


def test_config_is_frozen_and_keyword_only() -> None:
    config = SyntheticConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_sites = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        SyntheticConfig(8)  # type: ignore[call-arg]


def test_extreme_test_fraction_keeps_two_training_rows() -> None:
    config = SyntheticConfig(
        n_sites=2, mean_rows=4, min_rows=4, quantity_skew=0.0, test_fraction=0.99
    )
    for site in make_synthetic(config, rng=np.random.default_rng(0)).sites:
        assert (site.n_train, site.n_test) == (2, 2)


def test_registry_options_belong_to_their_spec() -> None:
    with pytest.raises(ConfigError, match="does not take synthetic"):
        load_dataset("heart", synthetic=SyntheticConfig())
    with pytest.raises(ConfigError, match="does not take label_column"):
        load_dataset("synthetic", label_column="y")
    with pytest.raises(ConfigError, match="seed"):
        load_dataset("synthetic", seed=-1)
