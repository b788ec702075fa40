"""The run's feature contract: bind it to the dataset's schema, check a joining site against it.

The consortium's run configuration carries the ordered feature names and the
digest of its declared :class:`~fedmap_secure.data.schema.FeatureSchema`
(``[features]``, ``FeaturesConfig``). A run fills them from the dataset's
schema when they are empty; a site checks its own schema against them before
it trains, so a hospital with other columns, another order, other scaling
constants or another class list is refused with one line instead of training
a silently wrong model. (Columns of a CSV file in another *order* but with the
schema's names are reordered by name when the file is read, before this
check.) Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses

from fedmap_secure.config.schema import FeaturesConfig, SimulationConfig
from fedmap_secure.data.schema import FeatureSchema
from fedmap_secure.errors import ConfigError


def bind_features(
    features: FeaturesConfig, schema: FeatureSchema, *, source: str
) -> FeaturesConfig:
    """The run's contract: ``schema``'s names and digest, checked against any declared ones."""
    if features.names and features.names != schema.names:
        raise ConfigError(
            f"{source}: features {list(schema.names)} differ from the run's declared "
            f"features.names {list(features.names)} (names or order)"
        )
    if features.schema_digest:
        schema.check_digest(features.schema_digest, source=source)
    return FeaturesConfig(names=schema.names, schema_digest=schema.digest())


def bind_config(
    config: SimulationConfig, schema: FeatureSchema, *, source: str
) -> SimulationConfig:
    """``config`` with its ``features`` bound to ``schema`` (see ``bind_features``)."""
    features = bind_features(config.features, schema, source=source)
    return dataclasses.replace(config, features=features)


def check_site_schema(features: FeaturesConfig, schema: FeatureSchema, *, site: str) -> None:
    """A site joining a run: refuse (``ConfigError`` naming it) unless its schema is the run's.

    ``features`` is the announced contract; an empty contract is refused too,
    since a site cannot tell what it would be agreeing to.
    """
    if not features.names or not features.schema_digest:
        raise ConfigError(
            f"site {site!r}: the run announces no feature schema (features.names and "
            "features.schema_digest); refusing to train on an unchecked feature layout"
        )
    bind_features(features, schema, source=f"site {site!r}")
