"""Per-site preprocessing shared by the loaders: the benchmark split and the declared scaling.

Scaling (``Scaling.DECLARED``, the only mode a run uses): every feature is
clipped to its declared range, centred and scaled with the consortium's
public constants (``FeatureSchema.transform``), one record at a time. No
constant depends on any record, so adding or removing a patient changes no
other patient's features and DP-SGD's per-record sensitivity stays the
clipping bound C.

``Scaling.SITE_STATISTICS`` reproduces the old preprocessing (each site
standardised with its own training mean and std). It is NOT private: the mean
and std are functions of every record, so one record moves every other
record's features (adding one outlier patient moved the clipped gradient sum
of Fed-Heart-Disease by about 25 C), a release outside the privacy ledger. It
exists only so the audit and the before/after comparison can show that; the
CLI cannot select it.

The train/test split (``benchmark_split``) depends on the site's labels. It is
done by the data holder before the run, at the site; the DP guarantee is about
the training split (the dataset D whose neighbours D +/- one record the
accountant considers), and the test rows never leave the site (only metrics
computed on them do, see LEDGER.md). The split itself is therefore not a
release: nothing about it leaves the site.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import DataError

TRAIN_FRACTION = 0.66
"""Share of a site's rows used for training (FLamby Fed-Heart-Disease)."""

SPLIT_RANDOM_STATE = 43
"""``random_state`` of FLamby's per-site ``train_test_split``."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]


class Scaling(enum.Enum):
    """How features are scaled (see the module docstring)."""

    DECLARED = "declared"
    """The consortium's public schema, per record (the default and the only private mode)."""
    SITE_STATISTICS = "site-statistics"
    """Each site's own training mean/std: NOT private; audits and comparisons only."""


def benchmark_split(y: IntArray) -> tuple[IndexArray, IndexArray]:
    """Split one site's rows 66/34 as FLamby does; return sorted (train, test) row indices.

    ``train_test_split(test_size=1 - 0.66, train_size=0.66, random_state=43,
    shuffle=True)``, stratified on the binary label when each class has more
    than two rows and unstratified otherwise (FLamby's rule; it leaves e.g.
    Fed-Heart-Disease Switzerland, which has one negative, unstratified).
    Indices are returned in file order, as FLamby keeps rows in file order.
    """
    from sklearn.model_selection import train_test_split  # slow import: only when splitting

    counts = np.bincount(y, minlength=2)
    stratify = y if bool((counts > 2).all()) else None
    train, test = train_test_split(
        np.arange(y.shape[0]),
        test_size=1.0 - TRAIN_FRACTION,
        train_size=TRAIN_FRACTION,
        random_state=SPLIT_RANDOM_STATE,
        shuffle=True,
        stratify=stratify,
    )
    return np.sort(train), np.sort(test)


def standardizer(reference: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Column mean and sample std (ddof=1) of ``reference``; std 1 for constant columns.

    Used only by ``Scaling.SITE_STATISTICS`` (not private, see the module
    docstring). A column that is constant in ``reference`` (or has a single
    row) is left unscaled (std 1).
    """
    if reference.ndim != 2 or reference.shape[0] == 0:
        raise DataError(f"cannot standardise from an array of shape {reference.shape}")
    mean = reference.mean(axis=0)
    if reference.shape[0] < 2:
        return mean, np.ones_like(mean)
    std = reference.std(axis=0, ddof=1)
    constant = np.ptp(reference, axis=0) == 0
    return mean, np.where(constant, 1.0, std)


def standardize(x: FloatArray, mean: FloatArray, std: FloatArray) -> npt.NDArray[np.float32]:
    """``(x - mean) / std`` in float64, returned as float32."""
    return ((x - mean) / std).astype(np.float32)


def scale_rows(
    *, schema: FeatureSchema, x_train: FloatArray, x_test: FloatArray, scaling: Scaling
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Scale one site's raw (train, test) rows: the declared schema, or (not private) its stats."""
    if scaling is Scaling.DECLARED:
        return schema.transform(x_train), schema.transform(x_test)
    mean, std = standardizer(x_train if x_train.shape[0] else x_test)
    return standardize(x_train, mean, std), standardize(x_test, mean, std)


@dataclass(frozen=True, kw_only=True)
class RawSite:
    """One site's split rows before scaling (raw feature values, schema order)."""

    name: str
    tier: Tier
    x_train: FloatArray
    y_train: IntArray
    x_test: FloatArray
    y_test: IntArray

    def scaled(self, schema: FeatureSchema, scaling: Scaling = Scaling.DECLARED) -> SiteData:
        x_train, x_test = scale_rows(
            schema=schema, x_train=self.x_train, x_test=self.x_test, scaling=scaling
        )
        return SiteData(
            name=self.name,
            tier=self.tier,
            x_train=x_train,
            y_train=self.y_train.astype(np.int64),
            x_test=x_test,
            y_test=self.y_test.astype(np.int64),
        )


def split_raw(*, name: str, tier: Tier, x: FloatArray, y: IntArray) -> RawSite:
    """Benchmark-split one site's raw rows (no scaling)."""
    train, test = benchmark_split(y)
    return RawSite(
        name=name, tier=tier, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test]
    )


def split_site(
    *,
    name: str,
    tier: Tier,
    x: FloatArray,
    y: IntArray,
    schema: FeatureSchema,
    scaling: Scaling = Scaling.DECLARED,
) -> SiteData:
    """Benchmark-split one site and scale it (declared schema by default)."""
    return split_raw(name=name, tier=tier, x=x, y=y).scaled(schema, scaling)
