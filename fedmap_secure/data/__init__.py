"""Federated datasets: bundled real data, a synthetic generator and site-folder CSVs.

Entry point: :func:`load_dataset` (``"heart"``, ``"thyroid"``, ``"synthetic"``,
``"csv:DIR"``). Every loader returns a :class:`FederatedDataset` of float32
features and int64 class labels, every row scaled with the dataset's declared
:class:`FeatureSchema` alone (public constants; see DATASETS.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# Imported on first use: the CLI parses its arguments (and the `schema` command's module
# imports this package) without loading every dataset loader.
_EXPORTS = {
    "FeatureSchema": "fedmap_secure.data.schema",
    "FeatureSpec": "fedmap_secure.data.schema",
    "FederatedDataset": "fedmap_secure.data.types",
    "Scaling": "fedmap_secure.data.preprocess",
    "SiteData": "fedmap_secure.data.types",
    "SyntheticConfig": "fedmap_secure.data.synthetic",
    "Tier": "fedmap_secure.data.types",
    "load_dataset": "fedmap_secure.data.registry",
}

if TYPE_CHECKING:
    from fedmap_secure.data.preprocess import Scaling
    from fedmap_secure.data.registry import load_dataset
    from fedmap_secure.data.schema import FeatureSchema, FeatureSpec
    from fedmap_secure.data.synthetic import SyntheticConfig
    from fedmap_secure.data.types import FederatedDataset, SiteData, Tier


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedmap_secure.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
