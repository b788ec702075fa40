"""Test metrics of one model on one site's test data (computed at the site)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import roc_auc_score
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
        return float(roc_auc_score(y, proba[:, 1]))
    # one-vs-rest macro AUC over the classes present (each has positives and negatives here)
    return float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
