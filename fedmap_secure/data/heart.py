"""Fed-Heart-Disease: the UCI heart-disease data of four hospitals, preprocessed as FLamby.

Source: the ``processed.*.data`` files of the UCI Heart Disease database
(bundled, see ``bundled/heart_disease/README.md`` for citation and checksums).
The preprocessing reproduces FLamby's ``fed_heart_disease`` benchmark
(owkin/FLamby, ``flamby/datasets/fed_heart_disease/dataset.py``, read to
confirm every step below):

1. 14 columns (age, sex, cp, trestbps, chol, fbs, restecg, thalach, exang,
   oldpeak, slope, ca, thal, num); ``?`` means missing.
2. Drop slope, ca and thal, then every row with a missing value: 740 rows
   remain (Cleveland 303, Hungary 261, Switzerland 46, VA 130).
3. Label ``y = num > 0`` (any angiographic disease).
4. Per site, ``train_test_split(test_size=1-0.66, train_size=0.66,
   random_state=43)`` stratified on y when each class has more than two rows
   (Switzerland has one negative, so it is split unstratified and its training
   split holds positives only). Train/test: 199/104, 172/89, 30/16, 85/45.
5. One-hot cp (levels 1-4) and restecg (levels 0-2), dropping the first level,
   with the dummy columns appended after the eight remaining columns: 13
   features. FLamby calls ``get_dummies`` on the pooled frame; since every level
   occurs in the pooled data, fixed levels give the same columns without
   pooling anything.
6. Scale every column with the consortium's DECLARED schema
   (``bundled/heart_disease/schema.toml``: clinical ranges, centres and scales
   from public references, each constant's source written beside it), one
   record at a time: ``(clip(x, low, high) - centre) / scale``.

Step 6 departs from FLamby on purpose. FLamby (``normalize=True``) standardises
each site with its own training mean and std; that makes one record move every
other record's features, a release outside the privacy ledger (issue 14).
``Scaling.SITE_STATISTICS`` still reproduces FLamby's scaling, for the audit
and the before/after comparison only (statistics in float64, a constant column
left unscaled; the only one is Switzerland's ``chol``, 0 in every row, a
missing-value code kept as FLamby keeps it; the declared schema clips it to the
plausible low end, 100 mg/dl).

FLamby splits before one-hot encoding; the split depends on the labels only,
so the order of steps 4 and 5 does not matter.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from fedmap_secure.data._bundled import read_bundled
from fedmap_secure.data.preprocess import FloatArray, RawSite, Scaling, split_raw
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.schema_file import parse_schema_toml
from fedmap_secure.data.types import FederatedDataset, Tier
from fedmap_secure.errors import DataError

RAW_COLUMNS = (
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "fbs",
    "restecg",
    "thalach",
    "exang",
    "oldpeak",
    "slope",
    "ca",
    "thal",
    "num",
)
DROPPED_COLUMNS = ("slope", "ca", "thal")
CATEGORICAL_LEVELS: dict[str, tuple[int, ...]] = {"cp": (1, 2, 3, 4), "restecg": (0, 1, 2)}
NUMERIC_FEATURES = ("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak")
FEATURE_NAMES = (
    *NUMERIC_FEATURES,
    *(f"{col}_{lvl}" for col, levels in CATEGORICAL_LEVELS.items() for lvl in levels[1:]),
)

SITE_FILES: tuple[tuple[str, str, str], ...] = (
    (
        "cleveland",
        "processed.cleveland.data",
        "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8",
    ),
    (
        "hungary",
        "processed.hungarian.data",
        "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796",
    ),
    (
        "switzerland",
        "processed.switzerland.data",
        "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314",
    ),
    (
        "va",
        "processed.va.data",
        "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f",
    ),
)
"""(site name, bundled file, pinned SHA-256) in FLamby's center order 0-3."""

SCHEMA_FILE = "schema.toml"
SCHEMA_SHA256 = "7670996803665007e3747c65663865f9a3f370b340488ab76febdc2585402557"

_DIR = "heart_disease"


def heart_schema() -> FeatureSchema:
    """The declared schema shipped in ``bundled/heart_disease/schema.toml`` (hash pinned)."""
    text = read_bundled(_DIR, SCHEMA_FILE, sha256=SCHEMA_SHA256).decode("utf-8")
    schema = parse_schema_toml(text, source=f"bundled/{_DIR}/{SCHEMA_FILE}")
    if schema.names != FEATURE_NAMES:
        raise DataError(f"bundled/{_DIR}/{SCHEMA_FILE}: features differ from {FEATURE_NAMES}")
    return schema


def load_heart(scaling: Scaling = Scaling.DECLARED) -> FederatedDataset:
    """Load Fed-Heart-Disease: four TRAIN sites, 13 features scaled by the declared schema.

    ``scaling=Scaling.SITE_STATISTICS`` is FLamby's per-site standardisation,
    which is not private (audits and comparisons only).
    """
    schema = heart_schema()
    sites = tuple(site.scaled(schema, scaling) for site in raw_heart_sites())
    return FederatedDataset(
        name="heart", feature_names=FEATURE_NAMES, n_classes=2, sites=sites, schema=schema
    )


def raw_heart_sites() -> tuple[RawSite, ...]:
    """The four sites split as FLamby, with raw (unscaled) feature values."""
    return tuple(_raw_site(name, fname, digest) for name, fname, digest in SITE_FILES)


def read_site_frame(filename: str, sha256: str) -> pd.DataFrame:
    """Parse one bundled file into the 14 named columns, drop slope/ca/thal and missing rows."""
    raw = read_bundled(_DIR, filename, sha256=sha256)
    frame = pd.read_csv(
        io.BytesIO(raw),
        header=None,
        names=list(RAW_COLUMNS),
        na_values=["?"],
        keep_default_na=False,
    )
    frame = frame.drop(columns=list(DROPPED_COLUMNS)).dropna(axis=0)
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(f"bundled file {filename}: non-numeric columns {non_numeric}")
    return frame.reset_index(drop=True)


def one_hot(frame: pd.DataFrame, filename: str) -> FloatArray:
    """The 13 feature columns: 8 numeric, then cp and restecg dummies (first level dropped)."""
    blocks = [frame[list(NUMERIC_FEATURES)].to_numpy(dtype=np.float64)]
    for col, levels in CATEGORICAL_LEVELS.items():
        values = frame[col].to_numpy(dtype=np.float64)
        unknown = sorted(set(values.tolist()) - {float(v) for v in levels})
        if unknown:
            raise DataError(f"bundled file {filename}: column {col!r} has unknown levels {unknown}")
        blocks.append(np.stack([values == lvl for lvl in levels[1:]], axis=1).astype(np.float64))
    return np.concatenate(blocks, axis=1)


def _raw_site(name: str, filename: str, sha256: str) -> RawSite:
    frame = read_site_frame(filename, sha256)
    y = (frame["num"].to_numpy() > 0).astype(np.int64)
    return split_raw(name=name, tier=Tier.TRAIN, x=one_hot(frame, filename), y=y)
