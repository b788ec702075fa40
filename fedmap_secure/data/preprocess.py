"""Per-site preprocessing shared by the loaders: the benchmark split and standardisation.

Nothing here looks at more than one site at a time: every statistic is computed
from one site's own rows, so no information crosses a site boundary.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split

from fedmap_secure.data.types import SiteData, Tier
from fedmap_secure.errors import DataError

TRAIN_FRACTION = 0.66
"""Share of a site's rows used for training (FLamby Fed-Heart-Disease)."""

SPLIT_RANDOM_STATE = 43
"""``random_state`` of FLamby's per-site ``train_test_split``."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
IndexArray = npt.NDArray[np.intp]


def benchmark_split(y: IntArray) -> tuple[IndexArray, IndexArray]:
    """Split one site's rows 66/34 as FLamby does; return sorted (train, test) row indices.

    ``train_test_split(test_size=1 - 0.66, train_size=0.66, random_state=43,
    shuffle=True)``, stratified on the binary label when each class has more
    than two rows and unstratified otherwise (FLamby's rule; it leaves e.g.
    Fed-Heart-Disease Switzerland, which has one negative, unstratified).
    Indices are returned in file order, as FLamby keeps rows in file order.
    """
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

    A column that is constant in ``reference`` (or has a single row) would
    divide by zero; it is left unscaled (std 1), so its reference values
    become exactly 0 and other values keep their offset from the constant.
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


def split_site(*, name: str, tier: Tier, x: FloatArray, y: IntArray) -> SiteData:
    """Benchmark-split one site and standardise it with its own training statistics."""
    train, test = benchmark_split(y)
    mean, std = standardizer(x[train])
    return SiteData(
        name=name,
        tier=tier,
        x_train=standardize(x[train], mean, std),
        y_train=y[train].astype(np.int64),
        x_test=standardize(x[test], mean, std),
        y_test=y[test].astype(np.int64),
    )
