"""Sans-I/O secure aggregation: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

Rings, as in h11: ``messages`` (typed vocabulary), ``stages`` (transition
tables), ``client``/``server`` (the state machines), and the byte-level
``encoding``; ``config`` (parameters, roster, threat-model check), ``graph``
(neighbour graph), ``masking`` and ``quantize`` (arithmetic in Z_{2^bits});
``inprocess.SecureAggregator`` drives N in-memory parties behind the
``fedmap_secure.aggregation.Aggregator`` seam. No torch, grpc, clock or file
access anywhere in this package. The normative description is protocol/SPEC.md.
"""

from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import Roster, SecAggConfig, derive_parameters
from fedmap_secure.secagg.inprocess import DropPoint, SecureAggregator
from fedmap_secure.secagg.quantize import Quantizer
from fedmap_secure.secagg.server import RoundOutput, ServerSession

__all__ = [
    "ClientSession",
    "DropPoint",
    "Quantizer",
    "Roster",
    "RoundOutput",
    "SecAggConfig",
    "SecureAggregator",
    "ServerSession",
    "derive_parameters",
]
