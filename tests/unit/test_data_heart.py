from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from fedmap_secure.data import Tier, load_dataset
from fedmap_secure.data._bundled import read_bundled
from fedmap_secure.data.heart import (
    FEATURE_NAMES,
    SCHEMA_SHA256,
    SITE_FILES,
    heart_schema,
    load_heart,
    one_hot,
    raw_heart_sites,
    read_site_frame,
)
from fedmap_secure.data.preprocess import Scaling, benchmark_split
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import DataError

BUNDLE = resources.files("fedmap_secure.data").joinpath("bundled", "heart_disease")

# (rows after dropping missing, train, test, train positives, test positives)
EXPECTED = {
    "cleveland": (303, 199, 104, 91, 48),
    "hungary": (261, 172, 89, 65, 33),
    "switzerland": (46, 30, 16, 30, 15),
    "va": (130, 85, 45, 66, 35),
}


@pytest.fixture(scope="module")
def heart() -> FederatedDataset:
    return load_dataset("heart")


def _sums() -> dict[str, str]:
    lines = BUNDLE.joinpath("SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines)}


def test_bundled_files_match_pinned_checksums() -> None:
    sums = _sums()
    assert set(sums) == {f for _, f, _ in SITE_FILES} | {"heart-disease.names", "schema.toml"}
    for name, digest in sums.items():
        assert hashlib.sha256(BUNDLE.joinpath(name).read_bytes()).hexdigest() == digest
    for _, filename, pinned in SITE_FILES:
        assert sums[filename] == pinned
    assert sums["schema.toml"] == SCHEMA_SHA256


def test_citation_note_names_the_four_principal_investigators() -> None:
    note = BUNDLE.joinpath("README.md").read_text()
    for name in ("Andras Janosi", "William Steinbrunn", "Matthias Pfisterer", "Robert Detrano"):
        assert name in note


def test_wrong_checksum_is_refused() -> None:
    with pytest.raises(DataError, match=r"processed\.va\.data.*expected 00"):
        read_bundled("heart_disease", "processed.va.data", sha256="00" * 32)


def test_sites_counts_and_flamby_split_sizes(heart: FederatedDataset) -> None:
    assert [s.name for s in heart.sites] == list(EXPECTED)
    assert sum(s.n_train + s.n_test for s in heart.sites) == 740
    for site in heart.sites:
        rows, n_train, n_test, pos_train, pos_test = EXPECTED[site.name]
        assert site.tier is Tier.TRAIN
        assert (site.n_train, site.n_test) == (n_train, n_test)
        assert n_train + n_test == rows
        assert (int(site.y_train.sum()), int(site.y_test.sum())) == (pos_train, pos_test)


def test_switzerland_training_split_has_only_positives(heart: FederatedDataset) -> None:
    swiss = heart.sites[2]
    assert swiss.name == "switzerland"
    assert set(swiss.y_train.tolist()) == {1}
    assert set(swiss.y_test.tolist()) == {0, 1}


def test_features_labels_dtypes(heart: FederatedDataset) -> None:
    assert heart.n_classes == 2
    assert heart.feature_names == FEATURE_NAMES
    assert len(FEATURE_NAMES) == 13
    for site in heart.sites:
        assert site.x_train.dtype == np.float32
        assert site.x_test.dtype == np.float32
        assert site.y_train.dtype == np.int64
        assert site.y_test.dtype == np.int64
        assert np.isfinite(site.x_train).all()
        assert np.isfinite(site.x_test).all()


def test_every_site_is_scaled_by_the_declared_schema_record_by_record(
    heart: FederatedDataset,
) -> None:
    schema = heart_schema()
    assert heart.schema == schema
    assert schema.names == FEATURE_NAMES
    for raw, site in zip(raw_heart_sites(), heart.sites, strict=True):
        np.testing.assert_array_equal(site.x_train, schema.transform(raw.x_train))
        np.testing.assert_array_equal(site.x_test, schema.transform(raw.x_test))
        # each record alone: dropping the other rows changes nothing
        np.testing.assert_array_equal(schema.transform(raw.x_train[:1]), site.x_train[:1])
    # Switzerland's chol is the missing code 0 in every row: clipped to the declared low end.
    swiss_chol = heart.sites[2].x_train[:, FEATURE_NAMES.index("chol")]
    chol = schema.features[FEATURE_NAMES.index("chol")]
    np.testing.assert_allclose(swiss_chol, (chol.low - chol.centre) / chol.scale)


def test_declared_scaling_keeps_typical_values_near_unit_scale(heart: FederatedDataset) -> None:
    """A sanity check of the declared constants (not a fit): no feature is wildly off-scale."""
    pooled = np.vstack([s.x_train for s in heart.sites]).astype(np.float64)
    assert np.abs(pooled.mean(axis=0)).max() < 2.5
    assert pooled.std(axis=0).max() < 2.0


def test_site_statistics_mode_reproduces_flamby_standardisation() -> None:
    """The old (not private) mode, kept for the audit and the comparison."""
    _name, filename, digest = SITE_FILES[0]
    frame = read_site_frame(filename, digest)
    x = one_hot(frame, filename)
    train, test = benchmark_split((frame["num"].to_numpy() > 0).astype(np.int64))
    site = load_heart(Scaling.SITE_STATISTICS).sites[0]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0, ddof=1)
    np.testing.assert_allclose(site.x_test * std + mean, x[test], atol=1e-3)
    np.testing.assert_allclose(site.x_train.mean(axis=0), 0.0, atol=1e-6)


def test_fixed_levels_equal_pooled_get_dummies() -> None:
    """FLamby one-hot encodes the pooled frame; fixed levels must give the same columns."""
    frames = [read_site_frame(f, d) for _, f, d in SITE_FILES]
    pooled = pd.concat(frames, ignore_index=True).drop(columns=["num"])
    dummies = pd.get_dummies(pooled, columns=["cp", "restecg"], drop_first=True, dtype=float)
    assert [c.replace(".0", "") for c in dummies.columns] == list(FEATURE_NAMES)
    ours = np.concatenate(
        [one_hot(fr, f) for fr, (_, f, _) in zip(frames, SITE_FILES, strict=True)]
    )
    np.testing.assert_array_equal(ours, dummies.to_numpy(dtype=np.float64))


def test_split_indices_are_pinned() -> None:
    """Golden values: catch a change of sklearn's splitting algorithm (both split paths)."""

    def test_rows(k: int) -> list[int]:
        _, filename, digest = SITE_FILES[k]
        y = (read_site_frame(filename, digest)["num"].to_numpy() > 0).astype(np.int64)
        return [int(i) for i in benchmark_split(y)[1]]

    cleveland = [5, 13, 16, 24, 26, 34, 40, 42, 43, 46, 47, 48]  # stratified
    switzerland = [5, 6, 7, 8, 13, 14, 18, 19, 20, 22, 24, 28, 29, 32, 40, 41]  # unstratified
    assert test_rows(0)[:12] == cleveland
    assert test_rows(2) == switzerland


def test_loading_is_deterministic(heart: FederatedDataset) -> None:
    again = load_dataset("heart", seed=123)
    for a, b in zip(heart.sites, again.sites, strict=True):
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.y_test, b.y_test)
