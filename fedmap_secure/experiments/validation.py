"""The validation view of a federation: training rows split, test rows never read.

Each training-tier site's *training* rows are split once (a fixed split seed,
stratified by class) into an inner training part (1 - ``VALIDATION_FRACTION``) and
a validation part that plays the test set's role; the site's test rows and the
other tiers are dropped. Tuning (``benchmarks/tune.py``) and per-run model
selection (``experiments.model_selection``) run on this view only, so no choice
ever sees a test row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fedmap_secure.data.types import FederatedDataset, SiteData, Tier

SPLIT_SEED = 20_260_101
VALIDATION_FRACTION = 0.2


def stratified_split(
    y: np.ndarray[Any, np.dtype[np.int64]], rng: np.random.Generator
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(inner-train, validation) row indices; each class contributes ~20% to validation,
    at least one row when it has two or more (so a class is never moved out entirely)."""
    train, val = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        n_val = round(VALIDATION_FRACTION * rows.size) if rows.size >= 2 else 0
        n_val = max(n_val, 1) if rows.size >= 2 else 0
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def validation_dataset(dataset: FederatedDataset) -> FederatedDataset:
    """The tuning view: training sites keep 80% of their training rows for training and
    evaluate on the other 20%; test rows and non-training tiers are dropped."""
    rng = np.random.default_rng(SPLIT_SEED)
    sites = []
    for s in dataset.sites:
        if s.tier is not Tier.TRAIN:
            continue
        tr, va = stratified_split(s.y_train, rng)
        sites.append(
            SiteData(
                name=s.name,
                tier=Tier.TRAIN,
                x_train=s.x_train[tr],
                y_train=s.y_train[tr],
                x_test=s.x_train[va],
                y_test=s.y_train[va],
            )
        )
    return dataclasses.replace(dataset, sites=tuple(sites))
