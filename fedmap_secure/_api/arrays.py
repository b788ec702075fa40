"""A ``FederatedDataset`` on disk for the site processes of an API run over gRPC.

``save_arrays`` writes ``dataset.json`` (name, feature names, classes, input
shape, sites and tiers) and one ``site-<i>.npz`` per site; ``load_arrays`` reads
them back with ``allow_pickle=False`` (no code runs from these files). The job
of each site process names the folder as the dataset spec ``arrays:DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedmap_secure.data.types import FederatedDataset, SiteData, Tier
from fedmap_secure.errors import DataError

ARRAYS_PREFIX = "arrays:"


def save_arrays(dataset: FederatedDataset, directory: Path) -> str:
    """Write ``dataset`` under ``directory``; returns its dataset spec ``arrays:DIR``."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, site in enumerate(dataset.sites):
        np.savez(
            directory / f"site-{i}.npz",
            x_train=site.x_train,
            y_train=site.y_train,
            x_test=site.x_test,
            y_test=site.y_test,
        )
    meta = {
        "name": dataset.name,
        "feature_names": list(dataset.feature_names),
        "n_classes": dataset.n_classes,
        "feature_shape": None if dataset.feature_shape is None else list(dataset.feature_shape),
        "sites": [{"name": s.name, "tier": s.tier.value} for s in dataset.sites],
    }
    (directory / "dataset.json").write_text(json.dumps(meta, indent=2))
    return f"{ARRAYS_PREFIX}{directory}"


def load_arrays(spec: str) -> FederatedDataset:
    """The dataset written by ``save_arrays`` (``spec`` is ``arrays:DIR``)."""
    directory = Path(spec.removeprefix(ARRAYS_PREFIX))
    try:
        meta = json.loads((directory / "dataset.json").read_text())
        sites = []
        for i, entry in enumerate(meta["sites"]):
            with np.load(directory / f"site-{i}.npz", allow_pickle=False) as arrays:
                sites.append(
                    SiteData(
                        name=str(entry["name"]),
                        tier=Tier(entry["tier"]),
                        x_train=arrays["x_train"],
                        y_train=arrays["y_train"],
                        x_test=arrays["x_test"],
                        y_test=arrays["y_test"],
                    )
                )
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read the site arrays in {str(directory)!r}: {exc}") from None
    shape = meta["feature_shape"]
    return FederatedDataset(
        name=str(meta["name"]),
        feature_names=tuple(str(f) for f in meta["feature_names"]),
        n_classes=int(meta["n_classes"]),
        feature_shape=None if shape is None else tuple(int(d) for d in shape),
        sites=tuple(sites),
    )
