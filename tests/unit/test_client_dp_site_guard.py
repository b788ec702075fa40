"""A site never sends two noisy client-level encodings of one round (issue 14 §4).

A server that reports a round aborted and re-runs the same round index would
get a fresh noisy encoding each time and could average the noise away; each
site's own ledger refuses the second encoding, durably, before anything is
encoded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.client_dp.rounds import ClientDpPlanner
from fedmap_secure.client_dp.site_guard import SiteNoiseGuard, in_memory_guards
from fedmap_secure.config.privacy import ClientDpMechanism, ClientDpSettings
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import AbortedError, PrivacyError
from fedmap_secure.secagg.config import SecAggConfig
from fedmap_secure.secagg.inprocess import SecureAggregator
from fedmap_secure.transport.client_dp_pin import SITE_SENT_LEDGER, PinnedClientDp

SITES = ("s1", "s2", "s3", "s4")
LAYOUT = VectorLayout((Field(name="update", length=48, bound=1.0),))
SETTINGS = ClientDpSettings(
    enabled=True, mechanism=ClientDpMechanism.DISCRETE_GAUSSIAN, epsilon=8.0, delta=1e-3
)
SECAGG = SecAggConfig.for_threat_model(
    n=len(SITES), dropout_fraction=0.25, corrupt_fraction=0.25, bits=64
)
CONTEXT = b"round-context"


def _planner() -> ClientDpPlanner:
    planner = ClientDpPlanner(SETTINGS, rounds=3, secagg=SECAGG)
    planner.check_layout(LAYOUT)
    return planner


def _vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(0, 1, LAYOUT.size)
    return 0.5 * v / np.linalg.norm(v)


def test_a_server_rerunning_an_aborted_round_gets_no_second_noisy_encoding() -> None:
    """In-process: the 'server' re-runs round 0; every site refuses, so the re-run aborts."""
    identities = {s: IdentityKey.generate(os.urandom) for s in SITES}
    guards = in_memory_guards(SITES, epsilon=SETTINGS.epsilon, delta=SETTINGS.delta)
    # the server's own factory charges nothing: only the sites' guards stand in the way
    aggregator = SecureAggregator(
        identities=identities,
        config=SECAGG,
        encoders=_planner().round_encoder,
        noise_guards=guards,
    )
    inputs = {s: _vector(i) for i, s in enumerate(SITES)}
    first = aggregator.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=CONTEXT)
    assert first.contributors == frozenset(SITES)
    with pytest.raises(AbortedError):  # "round 0 again, please": nobody sends a second one
        aggregator.aggregate(round_index=0, layout=LAYOUT, inputs=inputs, context=CONTEXT)
    for guard in guards.values():
        assert [e.round_index for e in guard.ledger.history()] == [0]
    later = aggregator.aggregate(round_index=1, layout=LAYOUT, inputs=inputs, context=CONTEXT)
    assert later.contributors == frozenset(SITES)
    assert all(g.sent_rounds() == {0, 1} for g in guards.values())


def test_the_site_record_is_durable_and_refuses_before_encoding(tmp_path: Path) -> None:
    """The gRPC site's encoder factory (pinned settings + its state dir) across a restart."""
    pinned = PinnedClientDp(settings=SETTINGS, rounds=3)
    factory = pinned.encoders(SECAGG, pinned.open_guard(tmp_path, "s1"))
    assert not (tmp_path / SITE_SENT_LEDGER).exists()  # opened only when a round asks
    encoder = factory(0, LAYOUT, CONTEXT)
    encoder.encode(_vector(1), random_bytes=os.urandom)
    with pytest.raises(PrivacyError, match="already sent a noisy client-level encoding"):
        factory(0, LAYOUT, CONTEXT)
    # an encoder obtained earlier cannot encode round 0 twice either (checked in the write lock)
    with pytest.raises(PrivacyError, match="never sends a second one"):
        encoder.encode(_vector(1), random_bytes=os.urandom)

    restarted = pinned.open_guard(tmp_path, "s1")  # a new process over the same state dir
    again = pinned.encoders(SECAGG, restarted)
    with pytest.raises(PrivacyError, match="round 0"):
        again(0, LAYOUT, CONTEXT)
    again(1, LAYOUT, CONTEXT).encode(_vector(2), random_bytes=os.urandom)
    assert restarted.sent_rounds() == {0, 1}
    assert restarted.ledger.spent() > 0


def test_the_guard_wraps_only_client_level_encoders() -> None:
    guard = next(iter(in_memory_guards(["s1"], epsilon=1.0, delta=1e-3).values()))
    from fedmap_secure.secagg.quantize import Quantizer

    with pytest.raises(Exception, match="client-level DP encoders only"):
        guard.encode(
            Quantizer.auto(LAYOUT, n_max=4, bits=64), 0, _vector(0), random_bytes=os.urandom
        )
    assert isinstance(guard, SiteNoiseGuard)
