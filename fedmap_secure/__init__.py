"""fedmap-secure: privacy-hardened personalised federated learning (FedMAP).

Sites train personalised models by local MAP estimation under a learned convex
(ICNN) prior; the server sees only securely aggregated, privacy-accounted sums.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedmap_secure.model_files import load_model

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__", "load_model"]


def __getattr__(name: str) -> object:
    """Lazy public names: ``import fedmap_secure`` must not import torch (a slow import)."""
    if name == "load_model":
        from fedmap_secure.model_files import load_model

        return load_model
    raise AttributeError(f"module 'fedmap_secure' has no attribute {name!r}")
