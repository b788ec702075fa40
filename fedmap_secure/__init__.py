"""fedmap-secure: privacy-hardened personalised federated learning (FedMAP).

Sites train personalised models by local MAP estimation under a learned convex
(ICNN) prior; the server sees only securely aggregated, privacy-accounted sums.

The public Python API is the names in ``__all__`` (docs/API.md); every other
module is internal and may change. Importing this package is cheap: torch,
Opacus and gRPC are imported when an entry point first needs them.

    import fedmap_secure as fs
    run = fs.simulate(fs.load_config(), sites, model=MyNet, out="runs/mine")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = [
    "PROTOCOL_VERSION",
    "ConfigError",
    "DataError",
    "FedMapError",
    "Metrics",
    "ModelFactory",
    "SimulationConfig",
    "SimulationRun",
    "Site",
    "SiteMetrics",
    "__version__",
    "check_model",
    "load_config",
    "load_model",
    "run_server",
    "run_site",
    "simulate",
]

_EXPORTS = {
    "ConfigError": "fedmap_secure.errors",
    "DataError": "fedmap_secure.errors",
    "FedMapError": "fedmap_secure.errors",
    "Metrics": "fedmap_secure._api.run",
    "ModelFactory": "fedmap_secure._api.models",
    "SimulationConfig": "fedmap_secure.config.schema",
    "SimulationRun": "fedmap_secure._api.run",
    "Site": "fedmap_secure._api.sites",
    "SiteMetrics": "fedmap_secure._api.run",
    "check_model": "fedmap_secure._api.models",
    "load_config": "fedmap_secure.config.loader",
    "load_model": "fedmap_secure.model_files",
    "run_server": "fedmap_secure._api.run",
    "run_site": "fedmap_secure._api.run",
    "simulate": "fedmap_secure._api.run",
}

if TYPE_CHECKING:
    from fedmap_secure._api.models import ModelFactory, check_model
    from fedmap_secure._api.run import (
        Metrics,
        SimulationRun,
        SiteMetrics,
        run_server,
        run_site,
        simulate,
    )
    from fedmap_secure._api.sites import Site
    from fedmap_secure.config.loader import load_config
    from fedmap_secure.config.schema import SimulationConfig
    from fedmap_secure.errors import ConfigError, DataError, FedMapError
    from fedmap_secure.model_files import load_model


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedmap_secure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
