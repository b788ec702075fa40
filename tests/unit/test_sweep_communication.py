from __future__ import annotations

from fedmap_secure.experiments.sweep.communication import plain_round_bytes, secagg_round_bytes


def test_plain_sum_sends_float64_vectors() -> None:
    rb = plain_round_bytes(layout_size=100, sites=4)
    assert (rb.payload, rb.overhead, rb.total) == (3200, 0, 3200)


def test_secagg_payload_is_ring_elements_and_overhead_grows_with_neighbours() -> None:
    small = secagg_round_bytes(layout_size=100, sites=4, bits=64, k=4)
    assert small.payload == 4 * 100 * 8
    narrow = secagg_round_bytes(layout_size=100, sites=4, bits=32, k=4)
    assert narrow.payload == 4 * 100 * 4
    assert narrow.overhead == small.overhead
    fewer = secagg_round_bytes(layout_size=100, sites=4, bits=64, k=3)
    assert 0 < fewer.overhead < small.overhead
    # the overhead does not depend on the vector length
    assert secagg_round_bytes(layout_size=10**6, sites=4, bits=64, k=4).overhead == small.overhead
