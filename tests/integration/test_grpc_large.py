"""A masked input larger than gRPC's 4 MiB message limit streams in frames end to end."""

from __future__ import annotations

import numpy as np

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.transport.channels import GRPC_MESSAGE_LIMIT
from tests.integration.grpc_harness import SITES, plain_consortium, running_server, start_sites

LENGTH = 600_000  # 8 bytes each: about 4.6 MiB per masked input


def test_vector_above_the_grpc_limit() -> None:
    assert 8 * LENGTH > GRPC_MESSAGE_LIMIT
    layout = VectorLayout((Field(name="theta", length=LENGTH, bound=4.0),))
    rng = np.random.default_rng(1)
    inputs = {s: np.round(rng.uniform(-2, 2, LENGTH) * 4) / 4 for s in SITES}  # dyadic: exact
    consortium = plain_consortium()
    with running_server(consortium) as server:
        sites = start_sites(server, consortium, inputs)
        result = server.run_round(round_index=0, layout=layout, context=b"big")
        sites.join()
    assert result.contributors == frozenset(SITES)
    np.testing.assert_array_equal(result.sums["theta"], sum(inputs.values()))
