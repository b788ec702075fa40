"""Federated datasets: bundled real data, a synthetic generator and site-folder CSVs.

Entry point: :func:`load_dataset` (``"heart"``, ``"thyroid"``, ``"synthetic"``,
``"csv:DIR"``). Every loader returns a :class:`FederatedDataset` of float32
features and int64 0/1 labels, standardised per site from that site's own data.
"""

from fedmap_secure.data.registry import load_dataset
from fedmap_secure.data.synthetic import SyntheticConfig
from fedmap_secure.data.types import FederatedDataset, SiteData, Tier

__all__ = ["FederatedDataset", "SiteData", "SyntheticConfig", "Tier", "load_dataset"]
