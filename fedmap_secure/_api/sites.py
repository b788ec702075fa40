"""Per-site data handed to the Python API: tensors, a torch ``Dataset`` or a DataFrame.

Every form becomes one :class:`Site` of float32 inputs of shape
``(n, *feature_shape)`` and int64 class indices ``(n,)``; :func:`federated_dataset`
checks that the sites agree (input shape, feature names, classes) and builds the
engine's ``FederatedDataset``. Labels must be class indices 0..K-1 (or strings
mapped through a declared class list): the sites train classifiers with
cross-entropy, so float (regression) targets are refused with a clear error
instead of failing deep inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from torch.utils.data import Dataset

TierName = Literal["train", "finetune", "unseen"]
Features = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class Site:
    """One site's data: inputs ``(n, *feature_shape)`` float32 and class indices ``(n,)``.

    Build it with :meth:`from_tensors`, :meth:`from_dataset` or
    :meth:`from_dataframe`. ``tier`` is ``"train"`` (takes part in training),
    ``"finetune"`` (joins after training and fine-tunes) or ``"unseen"`` (test
    data only, evaluated with the global model). The test split is evaluated
    at the site; it never leaves it.
    """

    name: str
    x_train: Features
    y_train: Labels
    x_test: Features
    y_test: Labels
    tier: TierName = "train"
    feature_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError("a site needs a non-empty name")
        if self.tier not in ("train", "finetune", "unseen"):
            raise DataError(f"site {self.name!r}: tier must be train, finetune or unseen")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"site {self.name!r}: train inputs {self.x_train.shape[1:]} and test inputs "
                f"{self.x_test.shape[1:]} differ in shape"
            )

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @classmethod
    def from_tensors(
        cls,
        name: str,
        x_train: Any,
        y_train: Any,
        x_test: Any = None,
        y_test: Any = None,
        *,
        tier: TierName = "train",
        feature_names: Sequence[str] | None = None,
    ) -> Site:
        """From torch tensors or numpy arrays: ``x`` of shape ``(n, *feature_shape)``
        (rows ``(n, d)``, images ``(n, channels, height, width)``...), ``y`` of shape
        ``(n,)`` holding integer class indices. Omit the test split to evaluate nothing
        at this site; an ``"unseen"`` site passes ``x_train=None, y_train=None``."""
        if x_train is None and tier == "unseen":
            if x_test is None:
                raise DataError(f"site {name!r}: an unseen site needs test data")
            x_te = _features(name, "test", x_test)
            x_tr = np.zeros((0, *x_te.shape[1:]), dtype=np.float32)
            y_tr = np.zeros(0, dtype=np.int64)
        else:
            x_tr = _features(name, "train", x_train)
            y_tr = _labels(name, "train", y_train)
            x_te = (
                np.zeros((0, *x_tr.shape[1:]), dtype=np.float32)
                if x_test is None
                else _features(name, "test", x_test)
            )
        y_te = np.zeros(0, dtype=np.int64) if y_test is None else _labels(name, "test", y_test)
        if (x_test is None) != (y_test is None):
            raise DataError(f"site {name!r}: give both x_test and y_test, or neither")
        names = None if feature_names is None else tuple(str(f) for f in feature_names)
        return cls(
            name=name,
            x_train=x_tr,
            y_train=y_tr,
            x_test=x_te,
            y_test=y_te,
            tier=tier,
            feature_names=names,
        )

    @classmethod
    def from_dataset(
        cls,
        name: str,
        train: Dataset[Any],
        test: Dataset[Any] | None = None,
        *,
        tier: TierName = "train",
    ) -> Site:
        """From map-style ``torch.utils.data.Dataset``s whose items are ``(x, y)`` pairs
        (``x`` a tensor or array of one shape, ``y`` an integer class index)."""
        x_tr, y_tr = _materialise(name, "train", train)
        x_te, y_te = (None, None) if test is None else _materialise(name, "test", test)
        return cls.from_tensors(name, x_tr, y_tr, x_te, y_te, tier=tier)

    @classmethod
    def from_dataframe(
        cls,
        name: str,
        train: pd.DataFrame,
        test: pd.DataFrame | None = None,
        *,
        label_column: str,
        classes: Sequence[object] | None = None,
        tier: TierName = "train",
    ) -> Site:
        """From pandas DataFrames: every column but ``label_column`` is a numeric feature
        (in the frame's column order, kept as the feature names). Labels are integer
        class indices, or values of ``classes`` (then class ``i`` is ``classes[i]``)."""
        x_tr, y_tr, names = _frame(name, "train", train, label_column, classes)
        if test is None:
            return cls.from_tensors(name, x_tr, y_tr, tier=tier, feature_names=names)
        x_te, y_te, test_names = _frame(name, "test", test, label_column, classes)
        if test_names != names:
            raise DataError(f"site {name!r}: train and test columns differ: {test_names}")
        return cls.from_tensors(name, x_tr, y_tr, x_te, y_te, tier=tier, feature_names=names)


def _numpy(value: Any) -> npt.NDArray[Any]:
    detach = getattr(value, "detach", None)
    if callable(detach):  # a torch tensor, without importing torch here
        return np.asarray(detach().cpu().numpy())
    return np.asarray(value)


def _features(site: str, split: str, x: Any) -> Features:
    array = _numpy(x)
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise DataError(f"site {site!r} {split}: inputs must be numeric, got dtype {array.dtype}")
    if array.ndim < 2:
        raise DataError(
            f"site {site!r} {split}: inputs have shape {array.shape}; expected (n, *feature_shape)"
            ", e.g. (n, d) rows or (n, channels, height, width) images (one feature: reshape to"
            " (n, 1))"
        )
    out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise DataError(f"site {site!r} {split}: inputs contain NaN or infinite values")
    return out


def _labels(site: str, split: str, y: Any) -> Labels:
    array = _numpy(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(
            f"site {site!r} {split}: labels have shape {array.shape}; expected (n,) class indices"
        )
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        raise DataError(
            f"site {site!r} {split}: labels are {array.dtype} numbers; fedmap-secure trains "
            "classifiers (cross-entropy over class indices 0..K-1), regression is not supported"
            " (class ids stored as floats: convert them with .astype(int))"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"site {site!r} {split}: labels of dtype {array.dtype} are not class indices; "
            "map them to 0..K-1 (Site.from_dataframe(..., classes=[...]) does it for a column)"
        )
    if array.size and int(array.min()) < 0:
        raise DataError(f"site {site!r} {split}: labels must be class indices >= 0")
    return array.astype(np.int64)


def _materialise(site: str, split: str, dataset: Any) -> tuple[npt.NDArray[Any], Labels]:
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"site {site!r} {split}: the Dataset must have a length") from None
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(f"site {site!r} {split}: item {i} is not an (x, y) pair")
        xs.append(_numpy(item[0]))
        ys.append(_numpy(item[1]).reshape(()))
    if not xs:
        raise DataError(f"site {site!r} {split}: the Dataset is empty")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise DataError(f"site {site!r} {split}: items have different shapes {sorted(shapes)}")
    x = np.stack(xs)
    if x.ndim == 1:
        x = x[:, None]
    return x, _labels(site, split, np.stack(ys))


def _frame(
    site: str,
    split: str,
    frame: pd.DataFrame,
    label_column: str,
    classes: Sequence[object] | None,
) -> tuple[npt.NDArray[Any], Labels, tuple[str, ...]]:
    if label_column not in frame.columns:
        raise DataError(f"site {site!r} {split}: no label column {label_column!r}")
    from pandas.api.types import is_numeric_dtype

    features = frame.drop(columns=[label_column])
    bad = [str(c) for c in features.columns if not is_numeric_dtype(features[c])]
    if bad:
        raise DataError(f"site {site!r} {split}: non-numeric feature columns {bad}")
    raw = frame[label_column].to_numpy()
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(v) for v in raw if v not in index})
        if unknown:
            raise DataError(
                f"site {site!r} {split}: labels {unknown} are not in the declared classes"
            )
        raw = np.array([index[v] for v in raw], dtype=np.int64)
    names = tuple(str(c) for c in features.columns)
    return features.to_numpy(dtype=np.float64), _labels(site, split, raw), names


def federated_dataset(
    sites: Sequence[Site], *, n_classes: int | None = None, name: str = "api"
) -> FederatedDataset:
    """The engine's dataset of ``sites``; ``n_classes`` defaults to the largest label + 1."""
    if not sites:
        raise DataError("give at least one site")
    for s in sites:
        if not isinstance(s, Site):
            raise DataError(f"sites must be fedmap_secure.Site objects, got {type(s).__name__}")
    shapes = {s.feature_shape for s in sites}
    if len(shapes) != 1:
        raise DataError(f"the sites' inputs differ in shape: {sorted(shapes)}")
    (shape,) = shapes
    declared = {s.feature_names for s in sites if s.feature_names is not None}
    if len(declared) > 1:
        raise DataError("the sites declare different feature names (or orders)")
    size = int(np.prod(shape))
    names = declared.pop() if declared else tuple(f"x{i}" for i in range(size))
    if len(names) != size:
        raise DataError(f"{len(names)} feature names for inputs of shape {shape}")
    largest = max((int(y.max()) for s in sites for y in (s.y_train, s.y_test) if y.size), default=0)
    classes = max(largest + 1, 2) if n_classes is None else n_classes
    if classes < 2 or largest >= classes:
        raise DataError(f"n_classes = {classes}, but a label is {largest} (labels are 0..K-1)")
    return FederatedDataset(
        name=name,
        feature_names=names,
        n_classes=classes,
        feature_shape=None if len(shape) == 1 else shape,
        sites=tuple(
            SiteData(
                name=s.name,
                tier=Tier(s.tier),
                x_train=s.x_train,
                y_train=s.y_train,
                x_test=s.x_test,
                y_test=s.y_test,
            )
            for s in sites
        ),
    )
