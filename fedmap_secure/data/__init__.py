"""Federated datasets: bundled real data, a synthetic generator and site-folder CSVs.

Entry point: :func:`load_dataset` (``"heart"``, ``"thyroid"``, ``"synthetic"``,
``"csv:DIR"``). Every loader returns a :class:`FederatedDataset` of float32
features and int64 class labels, every row scaled with the dataset's declared
:class:`FeatureSchema` alone (public constants; see DATASETS.md).
"""

from fedmap_secure.data.preprocess import Scaling
from fedmap_secure.data.registry import load_dataset
from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
from fedmap_secure.data.synthetic import SyntheticConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier

__all__ = [
    "FeatureSchema",
    "FeatureSpec",
    "FederatedDataset",
    "Scaling",
    "SiteData",
    "SyntheticConfig",
    "Tier",
    "load_dataset",
]
