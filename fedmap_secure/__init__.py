"""fedmap-secure: privacy-hardened personalised federated learning (FedMAP).

Sites train personalised models by local MAP estimation under a learned convex
(ICNN) prior; the server sees only securely aggregated, privacy-accounted sums.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
