"""The site's ROC AUC (``fedmap.evaluation.binary_auc``) equals scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from fedmap_secure.fedmap.evaluation import binary_auc


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.booleans(), min_size=2, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    decimals=st.integers(0, 3),
)
def test_binary_auc_equals_sklearn(labels: list[bool], seed: int, decimals: int) -> None:
    positive = np.array(labels)
    if positive.all() or not positive.any():
        return
    # few decimals: many tied scores, within and across the classes
    score = np.round(np.random.default_rng(seed).random(positive.size), decimals)
    assert binary_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)


def test_binary_auc_refuses_what_sklearn_refuses() -> None:
    with pytest.raises(ValueError, match="NaN"):
        binary_auc(np.array([True, False]), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="positive and negative"):
        binary_auc(np.array([True, True]), np.array([0.2, 0.4]))
