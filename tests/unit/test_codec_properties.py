"""Hypothesis: typed -> protobuf -> bytes -> typed is the identity; random bytes never crash."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmap_secure.aggregation import Field, VectorLayout
from fedmap_secure.errors import RemoteProtocolError
from fedmap_secure.secagg import messages as sm
from fedmap_secure.transport import codec, framing
from fedmap_secure.transport import messages as tm
from fedmap_secure.transport.generated.v1 import secagg_pb2 as pb

site_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
key32 = st.binary(min_size=32, max_size=32)
sig64 = st.binary(min_size=64, max_size=64)
headers = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "session_id": key32,
        "round_index": st.integers(0, 2**64 - 1),
        "sender": site_ids,
    }
)
envelopes = st.builds(
    sm.ShareEnvelope, sender=site_ids, receiver=site_ids, ciphertext=st.binary(max_size=200)
)
shares = st.builds(
    sm.RevealedShare, owner=site_ids, index=st.integers(1, 2**32 - 1), value=st.binary(max_size=98)
)
vectors = st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50).map(
    lambda v: np.array(v, dtype=np.uint64)
)


def _advertise(h: dict[str, object]) -> st.SearchStrategy[sm.AdvertiseKeys]:
    return st.builds(
        sm.AdvertiseKeys,
        **{k: st.just(v) for k, v in h.items()},
        mask_public=key32,
        encryption_public=key32,
        signature=sig64,
    )


def _site_messages(h: dict[str, object]) -> st.SearchStrategy[codec.SiteWireMessage]:
    j = {k: st.just(v) for k, v in h.items()}
    return st.one_of(
        _advertise(h),
        st.builds(
            sm.ShareKeys,
            **j,
            envelopes=st.tuples(envelopes, envelopes),
            self_mask_commitment=st.binary(max_size=96),
            mask_key_commitment=st.binary(max_size=96),
        ),
        st.builds(sm.MaskedInput, **j, masked=vectors),
        st.builds(sm.ConsistencySignature, **j, signature=sig64),
        st.builds(
            sm.UnmaskResponse,
            **j,
            self_mask_shares=st.lists(shares, max_size=4).map(tuple),
            mask_key_shares=st.lists(shares, max_size=4).map(tuple),
        ),
        st.builds(tm.Decline, **j, reason=st.sampled_from(tm.DeclineReason)),
    )


layouts = st.lists(
    st.tuples(st.integers(1, 10**6), st.floats(min_value=1e-300, max_value=1e300, allow_nan=False)),
    min_size=1,
    max_size=4,
).map(
    lambda fs: VectorLayout(
        tuple(Field(name=f"f{i}", length=n, bound=b) for i, (n, b) in enumerate(fs))
    )
)


def _server_messages(h: dict[str, object]) -> st.SearchStrategy[codec.ServerWireMessage]:
    j = {k: st.just(v) for k, v in h.items()}
    names = st.lists(site_ids, max_size=6).map(tuple)
    return st.one_of(
        st.builds(
            tm.SecAggSetup,
            **j,
            layout=layouts,
            context=st.binary(max_size=64),
            config_digest=key32,
            roster_digest=key32,
            stage_timeout_ms=st.integers(1, 2**63),
        ),
        st.builds(
            sm.KeyBroadcast, **j, advertisements=st.lists(_advertise(h), max_size=3).map(tuple)
        ),
        st.builds(
            sm.ShareDelivery,
            **j,
            receiver=site_ids,
            envelopes=st.lists(envelopes, max_size=3).map(tuple),
        ),
        st.builds(sm.ConsistencyRequest, **j, survivors=names),
        st.builds(
            sm.UnmaskRequest,
            **j,
            alive=names,
            dropped=names,
            signatures=st.lists(
                st.builds(sm.SurvivorSignature, site=site_ids, signature=sig64), max_size=3
            ).map(tuple),
        ),
        st.builds(
            tm.RoundOutcome,
            **j,
            status=st.sampled_from(tm.RoundStatus),
            contributors=st.sets(site_ids, max_size=5).map(lambda s: tuple(sorted(s))),
            detail=st.text(max_size=40),
        ),
    )


def _equal(a: object, b: object) -> bool:
    if isinstance(a, sm.MaskedInput) and isinstance(b, sm.MaskedInput):
        return (
            a.session_id == b.session_id
            and a.sender == b.sender
            and a.round_index == b.round_index
            and np.array_equal(a.masked, b.masked)
        )
    return a == b


@settings(max_examples=60, deadline=None)
@given(data=st.data(), h=headers)
def test_site_messages_round_trip(data: st.DataObject, h: dict[str, object]) -> None:
    message = data.draw(_site_messages(h))
    wire = codec.encode_site_message(message).SerializeToString()
    assert _equal(codec.parse_site_message(wire, peer="p"), message)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), h=headers)
def test_server_messages_round_trip(data: st.DataObject, h: dict[str, object]) -> None:
    message = data.draw(_server_messages(h))
    wire = codec.encode_server_message(message).SerializeToString()
    assert _equal(codec.parse_server_message(wire, peer="@server"), message)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    for parse in (codec.parse_site_message, codec.parse_server_message):
        peer = ""
        try:
            parse(data, peer="p")
            peer = "p"
        except RemoteProtocolError as exc:
            peer = exc.peer
        assert peer == "p"


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700))
def test_framing_round_trip(data: bytes, chunk: int) -> None:
    header = pb.Header(version=1, round=1, sender="s")
    frames = framing.split(data, header, chunk_size=chunk)
    assert all(len(f.data) <= chunk for f in frames)
    assert framing.read_one(frames, peer="s") == (header, data)
