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
6. Standardise all 13 columns (dummies included) per site with that site's
   training mean and sample std (ddof=1), as FLamby's ``normalize=True``.

FLamby splits before one-hot encoding; the split depends on the labels only,
so the order of steps 4 and 5 does not matter.

Deviations, both without effect beyond float32 rounding on this data:
statistics are computed in float64 (FLamby: float32), and a column constant in
a site's training split is left unscaled (std 1) where FLamby divides by
``std + 1e-9``. The only such column here is Switzerland's ``chol`` (0 in every
row of that site, a missing-value code kept as FLamby keeps it), which is 0
after either rule.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from fedmap_secure.data._bundled import read_bundled
from fedmap_secure.data.preprocess import FloatArray, split_site
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
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

_DIR = "heart_disease"


def load_heart() -> FederatedDataset:
    """Load Fed-Heart-Disease: four TRAIN sites, 13 standardised features, binary label."""
    sites = tuple(_load_site(name, fname, digest) for name, fname, digest in SITE_FILES)
    return FederatedDataset(name="heart", feature_names=FEATURE_NAMES, n_classes=2, sites=sites)


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


def _load_site(name: str, filename: str, sha256: str) -> SiteData:
    frame = read_site_frame(filename, sha256)
    y = (frame["num"].to_numpy() > 0).astype(np.int64)
    return split_site(name=name, tier=Tier.TRAIN, x=one_hot(frame, filename), y=y)
