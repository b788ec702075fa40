"""The in-memory shape every dataset loader returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.errors import DataError


class Tier(enum.Enum):
    """A site's role, as in the FedMAP reference implementation.

    TRAIN: takes part in federated training.
    FINETUNE: joins after training; fine-tunes with the trained (gamma, psi).
    UNSEEN: has test data only; evaluated with the global model gamma.
    """

    TRAIN = "train"
    FINETUNE = "finetune"
    UNSEEN = "unseen"


@dataclass(frozen=True, kw_only=True)
class SiteData:
    """One site's preprocessed data. Features float32 (n, d) (or (n, *feature_shape), e.g.
    images passed from Python), labels int64 (n,)."""

    name: str
    tier: Tier
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise DataError(
                    f"site {self.name!r} {split}: features {x.shape} and labels {y.shape} "
                    "disagree (expected features (n, *feature_shape) and labels (n,))"
                )
        if self.tier is Tier.UNSEEN and self.x_train.shape[0] != 0:
            raise DataError(f"site {self.name!r}: an unseen site has no training data")
        if self.tier is not Tier.UNSEEN and self.x_train.shape[0] == 0:
            raise DataError(f"site {self.name!r}: a {self.tier.value} site needs training data")

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


@dataclass(frozen=True, kw_only=True)
class FederatedDataset:
    """A named set of sites sharing one feature space and label set.

    ``schema`` is the consortium's declared feature schema the sites' features
    were transformed with (the bundled datasets ship one; ``csv:DIR`` requires
    one). Omitted, it is ``FeatureSchema.identity(feature_names)``: the caller
    declares the features are already on a public, data-independent scale.
    Its names must equal ``feature_names`` and its class list (if any) must
    have ``n_classes`` entries.
    ``feature_shape`` is the shape of one input (default ``(len(feature_names),)``:
    flat rows); an image dataset has e.g. ``(1, 8, 8)`` and one name per input value.
    """

    name: str
    feature_names: tuple[str, ...]
    n_classes: int
    sites: tuple[SiteData, ...]
    schema: FeatureSchema = field(default=None)  # type: ignore[assignment]
    feature_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.schema is None:
            object.__setattr__(self, "schema", FeatureSchema.identity(self.feature_names))
        if self.schema.names != tuple(self.feature_names):
            raise DataError(
                f"dataset {self.name!r}: feature names {list(self.feature_names)} differ "
                f"from its schema's {list(self.schema.names)}"
            )
        if self.schema.classes is not None and len(self.schema.classes) != self.n_classes:
            raise DataError(
                f"dataset {self.name!r}: {self.n_classes} classes but the schema declares "
                f"{list(self.schema.classes)}"
            )
        shape = self.input_shape
        if int(np.prod(shape)) != len(self.feature_names):
            raise DataError(
                f"dataset {self.name!r}: feature_shape {shape} does not hold "
                f"{len(self.feature_names)} feature names"
            )
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise DataError(f"dataset {self.name!r}: duplicate site names {names}")
        for s in self.sites:
            for x in (s.x_train, s.x_test):
                if x.shape[0] and tuple(x.shape[1:]) != shape:
                    raise DataError(
                        f"site {s.name!r}: inputs of shape {tuple(x.shape[1:])}, "
                        f"the dataset's are {shape}"
                    )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: ``feature_shape``, or ``(d,)`` for flat feature rows."""
        return self.feature_shape if self.feature_shape is not None else (len(self.feature_names),)

    def by_tier(self, tier: Tier) -> tuple[SiteData, ...]:
        return tuple(s for s in self.sites if s.tier is tier)

    @property
    def class_labels(self) -> tuple[str, ...] | None:
        """The declared class labels (None: integer labels 0..n_classes-1)."""
        return self.schema.classes
