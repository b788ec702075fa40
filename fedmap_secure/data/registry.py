"""``load_dataset``: one entry point for every dataset spec."""

from __future__ import annotations

import numpy as np

from fedmap_secure.data.csv_sites import load_csv_sites
from fedmap_secure.data.heart import load_heart
from fedmap_secure.data.preprocess import Scaling
from fedmap_secure.data.synthetic import SyntheticConfig, make_synthetic
from fedmap_secure.data.thyroid import load_thyroid
from fedmap_secure.data.types import FederatedDataset
from fedmap_secure.errors import ConfigError

CSV_PREFIX = "csv:"
BUNDLED = ("heart", "thyroid")
SPECS = (*BUNDLED, "synthetic", f"{CSV_PREFIX}DIR")


def load_dataset(
    spec: str,
    *,
    label_column: str | None = None,
    seed: int = 0,
    synthetic: SyntheticConfig | None = None,
    scaling: Scaling = Scaling.DECLARED,
) -> FederatedDataset:
    """Load a federated dataset.

    ``spec`` is ``"heart"`` (Fed-Heart-Disease, 4 sites), ``"thyroid"`` (thyroid0387
    by referral source, 5 sites), ``"synthetic"`` (drawn from ``synthetic``, default
    ``SyntheticConfig()``, with ``numpy.random.default_rng(seed)``) or ``"csv:DIR"``
    (your own site folder; ``label_column`` is required).

    The bundled datasets and site folders have fixed splits (the FLamby split, or
    the files themselves): ``seed`` only drives the synthetic generator.
    ``label_column`` is only meaningful for ``csv:`` and ``synthetic`` only for
    ``"synthetic"``; passing them elsewhere is a ``ConfigError``.

    Every dataset carries its declared ``FeatureSchema`` (``dataset.schema``)
    and every row is scaled with it alone. ``scaling=Scaling.SITE_STATISTICS``
    (heart and thyroid only) restores the old per-site standardisation, which
    is NOT private; it exists for the privacy audit and the before/after
    comparison and no command-line option selects it.
    """
    if scaling is not Scaling.DECLARED and spec not in BUNDLED:
        raise ConfigError(f"dataset spec {spec!r}: only the declared schema scales it")
    if spec.startswith(CSV_PREFIX):
        directory = spec[len(CSV_PREFIX) :]
        if not directory:
            raise ConfigError(f"dataset spec {spec!r}: give a directory, e.g. csv:./sites")
        if not label_column:
            raise ConfigError(f"dataset spec {spec!r}: label_column is required for csv: sites")
        _refuse(spec, synthetic=synthetic)
        return load_csv_sites(directory, label_column=label_column)
    if spec not in (*BUNDLED, "synthetic"):
        raise ConfigError(f"unknown dataset spec {spec!r}; expected one of {list(SPECS)}")
    _refuse(spec, label_column=label_column)
    if spec == "synthetic":
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
        config = synthetic if synthetic is not None else SyntheticConfig()
        return make_synthetic(config, rng=np.random.default_rng(seed))
    _refuse(spec, synthetic=synthetic)
    return load_heart(scaling) if spec == "heart" else load_thyroid(scaling)


def _refuse(spec: str, **options: object) -> None:
    for name, value in options.items():
        if value is not None:
            raise ConfigError(f"dataset spec {spec!r} does not take {name}")
