"""Test metrics of one model on one site's test data (computed at the site)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedmap_secure.fedmap.threshold import predict_with_threshold


@dataclass(frozen=True, kw_only=True)
class EvalMetrics:
    """Accuracy, balanced accuracy and ROC AUC on ``n`` test rows.

    ``balanced_accuracy`` is the macro average of the per-class recalls over
    the classes present in the test labels (sklearn's definition; for K > 2
    the macro balanced accuracy). ``roc_auc`` is the binary AUC for two
    classes and, for K > 2, the one-vs-rest macro AUC: the mean over the
    classes present in the test labels of the AUC of "class c versus the
    rest" scored by the model's probability of c. It is None when undefined:
    the test labels contain a single class.
    """

    n: int
    accuracy: float
    balanced_accuracy: float
    roc_auc: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "roc_auc": self.roc_auc,
        }


def predict_proba(model: nn.Module, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        return torch.softmax(logits, dim=1).to(torch.float64).numpy()


def evaluate(
    model: nn.Module,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    n_classes: int,
    threshold: float | None = None,
) -> EvalMetrics | None:
    """Metrics of ``model`` on (x, y); None when there are no test rows.

    ``threshold`` (two classes only): predict class 1 when p(1 | x) >= threshold
    (``fedmap_secure.fedmap.threshold``); None: argmax. AUC does not depend on it.
    """
    if x.shape[0] == 0:
        return None
    proba = predict_proba(model, x)
    pred = predict_with_threshold(proba, threshold)
    acc = float(np.mean(pred == y))
    # Balanced accuracy as sklearn defines it: mean recall over classes present in y.
    bal = float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))
    return EvalMetrics(
        n=int(x.shape[0]), accuracy=acc, balanced_accuracy=bal, roc_auc=_auc(y, proba, n_classes)
    )


def _auc(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], n_classes: int) -> float | None:
    present = np.unique(y)
    if present.size < 2:
        return None
    if n_classes == 2:
        return binary_auc(y == 1, proba[:, 1])
    # one-vs-rest macro AUC over the classes present (each has positives and negatives here)
    return float(np.mean([binary_auc(y == c, proba[:, c]) for c in present]))


def binary_auc(positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> float:
    """ROC AUC of ``score`` for the ``positive`` rows against the others (both present).

    The Mann-Whitney form: AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-), R+ the sum of the
    positives' ranks among all scores, tied scores sharing their average rank (a tied
    positive-negative pair counts 1/2). This is the area under the ROC curve with ties
    as diagonal segments, i.e. ``sklearn.metrics.roc_auc_score`` (tested equal), about
    20x cheaper for a site's test set (sklearn validates and builds the whole curve).
    """
    if not np.all(np.isfinite(score)):
        raise ValueError("ROC AUC: the scores contain NaN or infinity")
    n_pos = int(np.count_nonzero(positive))
    n_neg = int(positive.size) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs positive and negative rows")
    order = np.argsort(score, kind="mergesort")
    ordered = score[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], ordered.size]
    group = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(ordered.size)
    ranks[order] = ((starts + ends + 1) / 2.0)[group]  # 1-based average rank of each tie group
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
