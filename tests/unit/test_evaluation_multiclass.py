"""Issue 17: macro balanced accuracy and one-vs-rest AUC for more than two classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from fedmap_secure.fedmap.evaluation import evaluate


class _Fixed(torch.nn.Module):
    """Returns the given logits row by row (the input holds row indices)."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def _run(logits: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float | None]:
    x = np.arange(len(y), dtype=np.float32)[:, None]
    m = evaluate(_Fixed(logits), x, y.astype(np.int64), n_classes=k)
    assert m is not None
    return m.balanced_accuracy, m.roc_auc


def test_three_classes_match_sklearn_macro_metrics() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=60)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[y]
    ba, auc = _run(logits, y, 3)
    proba = torch.softmax(torch.tensor(logits, dtype=torch.float32), 1).double().numpy()
    assert ba == pytest.approx(balanced_accuracy_score(y, logits.argmax(1)))
    assert auc == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert auc is not None
    assert 0.5 < auc <= 1.0


def test_auc_over_the_classes_present_when_one_is_missing_from_the_test_rows() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=40) * 2  # classes 0 and 2 only, of K = 4
    logits = rng.normal(size=(40, 4)) + 2.0 * np.eye(4)[y]
    _, auc = _run(logits, y, 4)
    proba = torch.softmax(torch.tensor(logits, dtype=torch.float32), 1).double().numpy()
    expected = np.mean([roc_auc_score(y == c, proba[:, c]) for c in (0, 2)])
    assert auc == pytest.approx(expected)
    _, single = _run(logits[:5], np.zeros(5, dtype=np.int64), 4)
    assert single is None


def test_binary_auc_unchanged() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=50)
    logits = rng.normal(size=(50, 2))
    _, auc = _run(logits, y, 2)
    proba = torch.softmax(torch.tensor(logits, dtype=torch.float32), 1).double().numpy()
    assert auc == pytest.approx(roc_auc_score(y, proba[:, 1]))
