"""Threats listed in threat_model/THREAT_MODEL.md that no other test exercised.

Two kinds: attacks the design stops (Sybil sites), and residual risks the
threat model declares out of scope, pinned here so the document stays true
(a corrupt site's arbitrary input; disaggregation by differencing rounds).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, PlainSum, VectorLayout
from fedmap_secure.crypto.agreement import AgreementKeyPair
from fedmap_secure.crypto.deterministic import DeterministicRandom
from fedmap_secure.crypto.labels import LABEL_KEY_ADVERTISEMENT
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.secagg.messages import AdvertiseKeys, KeyBroadcast
from fedmap_secure.secagg.stages import ClientStage

from .secagg_harness import Round, encoded_input, expected_sum


def _sybil_advertisement(r: Round, name: str) -> AdvertiseKeys:
    """Keys for a site the server invented, signed by a key the server holds."""
    sybil = IdentityKey.from_seed(b"\x09" * 32)
    mask = AgreementKeyPair.from_private_bytes(b"\x03" * 32)
    enc = AgreementKeyPair.from_private_bytes(b"\x04" * 32)
    payload = encoding.advertisement_payload(
        setup=r.server.setup_id,
        round_index=r.round_index,
        site=name,
        mask_public=mask.public,
        encryption_public=enc.public,
    )
    return AdvertiseKeys(
        version=1,
        session_id=r.server.setup_id,
        round_index=r.round_index,
        sender=name,
        mask_public=mask.public,
        encryption_public=enc.public,
        signature=sybil.sign(payload, label=LABEL_KEY_ADVERTISEMENT),
    )


def test_sybil_site_not_on_the_roster_is_refused_by_server_and_sites() -> None:
    r = Round(n=4, t=3)
    fake = _sybil_advertisement(r, "s9")
    with pytest.raises(RemoteProtocolError, match="not on the roster"):
        r.server.receive(fake)
    broadcasts = r.advertise()
    for site, broadcast in broadcasts.items():
        assert isinstance(broadcast, KeyBroadcast)
        padded = replace(broadcast, advertisements=(*broadcast.advertisements, fake))
        with pytest.raises(RemoteProtocolError):
            r.clients[site].receive(padded)
        assert r.clients[site].stage is ClientStage.FAILED


def test_corrupt_site_can_shift_the_sum_arbitrarily_within_z_2_b() -> None:
    """Residual risk (out of scope): input validity. A site that bypasses its own
    quantizer contributes any value of Z_{2^b}; the round completes and the sum moves."""
    r = Round(n=4, t=3)
    deliveries = r.share(r.advertise())
    r.to_clients(deliveries)
    poison = np.array([2**63, 2**64 - 1, 12345, 2**40], dtype=np.uint64)
    honest = [s for s in r.sites if s != "s0"]
    r.to_server({s: r.clients[s].submit_input(encoded_input(s)) for s in honest})
    r.server.receive(r.clients["s0"].submit_input(poison))
    output = r.unmask(r.sign(r.server.close_stage()))
    assert output.contributors == frozenset(r.sites)
    np.testing.assert_array_equal(output.total, expected_sum(honest) + poison)


def test_difference_of_two_rounds_isolates_a_site_that_dropped() -> None:
    """Residual risk: SecAgg hides one round's inputs, not a difference of rounds.
    Two sums whose contributor sets differ by one site reveal that site's input
    (here with the same inputs); only the DP noise each site adds protects its records."""
    layout = VectorLayout((Field(name="x", length=4, bound=1.0),))
    sites = [f"h{i}" for i in range(6)]
    rng = np.random.default_rng(5)
    inputs = {s: rng.uniform(-1, 1, 4) for s in sites}
    agg = SecureAggregator.simulated(
        sites, dropout_fraction=0.2, corrupt_fraction=0.0, random_bytes=DeterministicRandom(b"d")
    )
    everyone = agg.aggregate(round_index=0, layout=layout, inputs=inputs, context=b"m")
    without = {s: v for s, v in inputs.items() if s != "h3"}
    fewer = agg.aggregate(round_index=1, layout=layout, inputs=without, context=b"m")
    isolated = everyone.sums["x"] - fewer.sums["x"]
    np.testing.assert_allclose(isolated, inputs["h3"], atol=1e-6)
    plain = PlainSum().aggregate(round_index=0, layout=layout, inputs=inputs, context=b"m")
    np.testing.assert_allclose(everyone.sums["x"], plain.sums["x"], atol=1e-6)
