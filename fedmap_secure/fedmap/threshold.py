"""A per-site decision threshold chosen on the site's own validation rows (issue 16).

``[training] threshold = "validation"`` makes every training site (any method) hold
out a fixed, stratified part of its *training* rows (``threshold_fraction``, drawn
once per run from the site's seed; the rows are never trained on) and, for a binary
task, predict class 1 when p(1 | x) >= t, with t chosen to maximise the balanced
accuracy of the site's personalised model on those held-out rows:

    t* = argmax_t BA_val(t),  BA(t) = (TPR(t) + TNR(t)) / 2,

over the midpoints between consecutive distinct validation scores and 0.5; ties go to
the candidate nearest 0.5 (the argmax rule), so a flat validation curve keeps argmax.

Degenerate validation splits are not silent: with fewer than
``MIN_ROWS_PER_CLASS`` validation rows of either class (e.g. a site whose training
rows are all positive), or a task with more than two classes, the site keeps the
argmax rule (t = 0.5) and the reason is logged and recorded in its result and in its
model file's sidecar (``ThresholdChoice.source``).

Privacy: the threshold is a statistic of the held-out rows. It stays at the site, in
the site's personalised model file (which never leaves the site); it is not part of
any contribution vector and is not charged to the ledger. If a site ships its
personalised model elsewhere, the threshold goes with it as an uncharged,
non-private release of its validation rows (docs/TUNING.md says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MIN_ROWS_PER_CLASS = 1
"""Validation rows of each class needed to choose a threshold (else argmax, recorded)."""

ARGMAX_THRESHOLD = 0.5


@dataclass(frozen=True, kw_only=True)
class ThresholdChoice:
    """The decision rule a site's personalised model predicts with.

    ``value``: predict class 1 when p(1 | x) >= value (binary tasks; 0.5 is argmax).
    ``source``: "validation" when chosen on the held-out rows, else "argmax: <why>".
    ``validation_rows``, ``validation_ba_argmax`` and ``validation_ba``: the held-out
    rows and the balanced accuracy there at 0.5 and at ``value`` (None when undefined).
    """

    value: float
    source: str
    validation_rows: int
    validation_ba_argmax: float | None = None
    validation_ba: float | None = None

    @property
    def chosen(self) -> bool:
        return self.source == "validation"

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "value": self.value,
            "source": self.source,
            "validation_rows": self.validation_rows,
            "validation_ba_argmax": self.validation_ba_argmax,
            "validation_ba": self.validation_ba,
        }


def balanced_accuracy(pred: npt.NDArray[np.int64], y: npt.NDArray[np.int64]) -> float:
    """Mean recall over the classes present in ``y`` (sklearn's definition)."""
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def predict_with_threshold(
    proba: npt.NDArray[np.float64], threshold: float | None
) -> npt.NDArray[np.int64]:
    """Class predictions: argmax, or for two classes p(1) >= ``threshold``."""
    if threshold is None or proba.shape[1] != 2:
        pred: npt.NDArray[np.int64] = proba.argmax(axis=1).astype(np.int64)
    else:
        pred = (proba[:, 1] >= threshold).astype(np.int64)
    return pred


def argmax_choice(reason: str, rows: int) -> ThresholdChoice:
    return ThresholdChoice(value=ARGMAX_THRESHOLD, source=f"argmax: {reason}", validation_rows=rows)


def choose_threshold(proba: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> ThresholdChoice:
    """The threshold maximising validation balanced accuracy (module docstring)."""
    n = int(y.shape[0])
    if proba.shape[1] != 2:
        return argmax_choice(f"{proba.shape[1]} classes (thresholds are for binary tasks)", n)
    counts = np.bincount(y, minlength=2)
    if counts.min() < MIN_ROWS_PER_CLASS:
        return argmax_choice(
            f"the validation split has {int(counts[0])} negative and {int(counts[1])} positive "
            "row(s); both classes are needed",
            n,
        )
    p1 = proba[:, 1]
    base = balanced_accuracy(predict_with_threshold(proba, ARGMAX_THRESHOLD), y)
    distinct = np.unique(p1)
    candidates = np.concatenate([[ARGMAX_THRESHOLD], (distinct[1:] + distinct[:-1]) / 2])
    # BA for every candidate at once: TPR(t) = mean(p1[y=1] >= t), TNR(t) = mean(p1[y=0] < t)
    pos, neg = p1[y == 1], p1[y == 0]
    tpr = (pos[None, :] >= candidates[:, None]).mean(axis=1)
    tnr = (neg[None, :] < candidates[:, None]).mean(axis=1)
    ba = (tpr + tnr) / 2
    best = float(ba.max())
    ties = np.flatnonzero(ba >= best - 1e-12)
    pick = ties[np.argmin(np.abs(candidates[ties] - ARGMAX_THRESHOLD))]
    return ThresholdChoice(
        value=float(candidates[pick]),
        source="validation",
        validation_rows=n,
        validation_ba_argmax=base,
        validation_ba=best,
    )


def holdout_size(n: int, fraction: float) -> int:
    """Rows held out of ``n`` training rows: round(fraction * n), at least 2, and none when
    fewer than 4 rows would remain for training. A function of n only: n_k is public,
    the class counts are not, so the size of the training part reveals nothing more."""
    n_out = max(round(fraction * n), 2)
    return n_out if n - n_out >= 4 else 0


def stratified_holdout(
    y: npt.NDArray[np.int64], fraction: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(kept, held-out) row indices, ``holdout_size(n, fraction)`` held out: first one row of
    every class that has two or more, while a second row of that class is reserved for
    training (so both classes reach validation when they can, and none leaves training
    entirely), then rows drawn at random from the rest."""
    n = int(y.shape[0])
    n_out = holdout_size(n, fraction)
    order = rng.permutation(n)
    first: list[int] = []
    reserved: list[int] = []
    for c in np.unique(y):
        rows = order[y[order] == c]
        if rows.size >= 2 and len(first) < n_out:
            first.append(int(rows[0]))
            reserved.append(int(rows[1]))
    # holdout_size leaves at least 4 training rows, so the (at most 2) reserved rows fit.
    taken = set(first) | set(reserved)
    rest = np.array([i for i in order if i not in taken], dtype=np.int64)
    held = np.concatenate([np.array(first, dtype=np.int64), rest[: n_out - len(first)]])
    mask = np.ones(n, dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask).astype(np.int64), np.sort(held).astype(np.int64)
