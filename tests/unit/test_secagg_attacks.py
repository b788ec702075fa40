"""A lying server (or corrupt site) must not learn an honest site's input.

Each attack below is known to work against an existing open-source SecAgg+
implementation. For each we check that honest sites refuse with the specific
error, stay failed, and reveal no share that would let the server rebuild both
the self-mask seed and the mask key of one site.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedmap_secure.crypto.agreement import AgreementKeyPair
from fedmap_secure.crypto.labels import LABEL_KEY_ADVERTISEMENT
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import AbortedError, ConfigError, RemoteProtocolError
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.config import SERVER_ID, Roster
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    KeyBroadcast,
    RevealedShare,
    ShareDelivery,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmap_secure.secagg.stages import ClientStage

from .secagg_harness import Round, expected_sum, identities


def _refuses(r: Round, site: str, message: object, match: str, peer: str = SERVER_ID) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        r.clients[site].receive(message)  # type: ignore[arg-type]
    assert info.value.peer == peer
    assert r.clients[site].stage is ClientStage.FAILED


def _unmask_requests(r: Round) -> dict[str, UnmaskRequest]:
    requests = r.sign(r.mask(r.share(r.advertise())))
    return {s: m for s, m in requests.items() if isinstance(m, UnmaskRequest)}


# ----------------------------------------------------------------------------- alive and dropped


def test_site_listed_both_alive_and_dropped_is_refused_by_every_site() -> None:
    r = Round(n=4, t=3)
    for site, request in _unmask_requests(r).items():
        forged = replace(request, dropped=("s0",))
        _refuses(r, site, forged, "both alive and dropped")


def test_moving_a_survivor_to_dropped_contradicts_the_signed_set() -> None:
    r = Round(n=4, t=3)
    for site, request in _unmask_requests(r).items():
        alive = tuple(s for s in request.alive if s != "s0")
        if site == "s0":
            continue
        _refuses(
            r, site, replace(request, alive=alive, dropped=("s0",)), "differs from the survivor"
        )


def test_unknown_or_non_sharing_sites_in_unmask_request_are_refused() -> None:
    r = Round(n=4, t=3)
    requests = _unmask_requests(r)
    _refuses(r, "s1", replace(requests["s1"], dropped=("mallory",)), "outside this session")


# ----------------------------------------------------------------------------- substituted keys


def test_server_substituting_its_own_keys_for_a_site_is_refused() -> None:
    r = Round(n=4, t=3)
    r.to_server({s: r.clients[s].start() for s in r.sites})
    broadcasts = r.server.close_stage()
    evil = IdentityKey.from_seed(b"\x07" * 32)
    mask, enc = (
        AgreementKeyPair.from_private_bytes(b"\x01" * 32),
        AgreementKeyPair.from_private_bytes(b"\x02" * 32),
    )
    payload = encoding.advertisement_payload(
        setup=r.server.setup_id,
        round_index=0,
        site="s1",
        mask_public=mask.public,
        encryption_public=enc.public,
    )
    fake = AdvertiseKeys(
        version=1,
        session_id=r.server.setup_id,
        round_index=0,
        sender="s1",
        mask_public=mask.public,
        encryption_public=enc.public,
        signature=evil.sign(payload, label=LABEL_KEY_ADVERTISEMENT),
    )
    for site, broadcast in broadcasts.items():
        assert isinstance(broadcast, KeyBroadcast)
        ads = tuple(fake if a.sender == "s1" else a for a in broadcast.advertisements)
        _refuses(r, site, replace(broadcast, advertisements=ads), "signature", peer="s1")


def test_server_cannot_accept_substituted_keys_either() -> None:
    r = Round(n=4, t=3)
    ad = r.clients["s1"].start()
    other = r.clients["s2"].start()
    with pytest.raises(RemoteProtocolError, match="signature") as info:
        r.server.receive(replace(ad, mask_public=other.mask_public))
    assert info.value.peer == "s1"


def test_site_refuses_a_broadcast_that_replaced_its_own_keys() -> None:
    r = Round(n=4, t=3)
    r.to_server({s: r.clients[s].start() for s in r.sites})
    broadcast = r.server.close_stage()["s0"]
    assert isinstance(broadcast, KeyBroadcast)
    without_own = tuple(a for a in broadcast.advertisements if a.sender != "s0")
    _refuses(r, "s0", replace(broadcast, advertisements=without_own), "own advertised keys")


# ----------------------------------------------------------------------------- split views


def test_different_survivor_lists_to_different_sites_reveal_no_mask_key() -> None:
    """Group A is told s0 is alive, group B that s0 dropped; t=3 of n=5 forbids both."""
    r = Round(n=5, t=3)
    requests = r.mask(r.share(r.advertise()))
    template = requests["s0"]
    assert isinstance(template, ConsistencyRequest)
    everyone = template.survivors
    without_target = tuple(s for s in everyone if s != "s0")
    views = {
        "s0": everyone,
        "s1": everyone,
        "s2": everyone,
        "s3": without_target,
        "s4": without_target,
    }
    signatures = {}
    for site, view in views.items():
        reply = r.clients[site].receive(replace(template, survivors=view))
        assert isinstance(reply, ConsistencySignature)
        signatures[site] = reply
    all_sigs = tuple(
        SurvivorSignature(site=reply.sender, signature=reply.signature)
        for reply in signatures.values()
    )
    base = UnmaskRequest(
        version=1,
        session_id=r.server.session_id,
        round_index=0,
        sender=SERVER_ID,
        alive=everyone,
        dropped=(),
        signatures=all_sigs,
    )
    responses = []
    for site in ("s1", "s2"):
        response = r.clients[site].receive(base)
        assert isinstance(response, UnmaskResponse)
        responses.append(response)
    for site in ("s3", "s4"):
        forged = replace(base, alive=without_target, dropped=("s0",))
        with pytest.raises(AbortedError, match="consistency signatures"):
            r.clients[site].receive(forged)
        assert r.clients[site].stage is ClientStage.FAILED
    mask_key_shares_of_target = [
        share for resp in responses for share in resp.mask_key_shares if share.owner == "s0"
    ]
    assert mask_key_shares_of_target == []


def test_signatures_over_another_survivor_set_do_not_count() -> None:
    r = Round(n=4, t=3)
    requests = _unmask_requests(r)
    request = requests["s1"]
    forged = replace(request, alive=request.alive[:-1], dropped=(request.alive[-1],))
    # s1 signed the full set; the server claims a smaller one with the full set's signatures
    _refuses(r, "s1", forged, "differs from the survivor")


# ----------------------------------------------------------------------------- replay


def test_round_r_messages_are_refused_in_round_r_plus_1() -> None:
    keys = identities(4)
    old, new = Round(n=4, t=3, keys=keys, round_index=0), Round(n=4, t=3, keys=keys, round_index=1)
    old_broadcast = old.advertise()
    new.to_server({s: new.clients[s].start() for s in new.sites})
    _refuses(new, "s0", old_broadcast["s0"], "round 0, expected 1")
    # Header rewritten to round 1: the signed advertisements still name round 0's setup.
    assert isinstance(old_broadcast["s1"], KeyBroadcast)
    rewritten = replace(old_broadcast["s1"], round_index=1, session_id=new.server.setup_id)
    _refuses(new, "s1", rewritten, "another version, setup or round", peer="s0")
    with pytest.raises(RemoteProtocolError, match="round 0, expected 1"):
        new.server.receive(old_broadcast["s2"].advertisements[2])  # type: ignore[union-attr]


def test_replayed_share_envelopes_from_an_earlier_round_do_not_open() -> None:
    keys = identities(4)
    old, new = Round(n=4, t=3, keys=keys, round_index=0), Round(n=4, t=3, keys=keys, round_index=1)
    old_deliveries = old.share(old.advertise())
    new_deliveries = new.share(new.advertise())
    old_d0, new_d0 = old_deliveries["s0"], new_deliveries["s0"]
    assert isinstance(old_d0, ShareDelivery)
    assert isinstance(new_d0, ShareDelivery)
    replay = replace(new_d0, envelopes=old_d0.envelopes)
    with pytest.raises(RemoteProtocolError, match="share envelope rejected"):
        new.clients["s0"].receive(replay)
    assert new.clients["s0"].stage is ClientStage.FAILED


def test_consistency_signatures_from_an_earlier_round_do_not_count() -> None:
    keys = identities(4)
    old, new = Round(n=4, t=3, keys=keys, round_index=0), Round(n=4, t=3, keys=keys, round_index=1)
    old_request = _unmask_requests(old)["s0"]
    new_request = _unmask_requests(new)["s0"]
    forged = replace(new_request, signatures=old_request.signatures)
    with pytest.raises(AbortedError):
        new.clients["s0"].receive(forged)


# ----------------------------------------------------------------------------- session id


def test_session_id_mismatch_is_refused_at_every_stage() -> None:
    wrong = bytes(range(32))
    r = Round(n=4, t=3)
    r.to_server({s: r.clients[s].start() for s in r.sites})
    broadcasts = r.server.close_stage()
    _refuses(r, "s3", replace(broadcasts["s3"], session_id=wrong), "another session")
    deliveries = r.share(broadcasts, ["s0", "s1", "s2"])
    _refuses(r, "s2", replace(deliveries["s2"], session_id=wrong), "another session")
    r.to_clients(deliveries, ["s0", "s1"])
    masked = r.clients["s0"].submit_input(np.zeros(4, dtype=np.uint64))
    with pytest.raises(RemoteProtocolError, match="another session") as info:
        r.server.receive(replace(masked, session_id=wrong))
    assert info.value.peer == "s0"


# ----------------------------------------------------------------------------- duplicates


def test_duplicate_site_ids_are_refused() -> None:
    r = Round(n=4, t=3)
    r.to_server({s: r.clients[s].start() for s in r.sites})
    broadcast = r.server.close_stage()["s0"]
    assert isinstance(broadcast, KeyBroadcast)
    doubled = replace(
        broadcast, advertisements=(*broadcast.advertisements, broadcast.advertisements[1])
    )
    _refuses(r, "s0", doubled, "advertised twice")
    with pytest.raises(ConfigError, match="duplicate"):
        Roster((("a", bytes(32)), ("a", bytes(32)), ("b", bytes(32))))


def test_duplicate_ids_in_survivor_and_unmask_lists_are_refused() -> None:
    r = Round(n=4, t=3)
    requests = _unmask_requests(r)
    request = requests["s0"]
    _refuses(r, "s0", replace(request, alive=(*request.alive, "s1")), "more than once")
    _refuses(r, "s1", replace(requests["s1"], dropped=("s2", "s2")), "more than once")


def test_duplicate_survivor_in_consistency_request_is_refused() -> None:
    r = Round(n=4, t=3)
    requests = r.mask(r.share(r.advertise()))
    request = requests["s0"]
    assert isinstance(request, ConsistencyRequest)
    _refuses(r, "s0", replace(request, survivors=(*request.survivors, "s3")), "more than once")


def test_repeated_signatures_count_once() -> None:
    r = Round(n=4, t=3)
    request = _unmask_requests(r)["s0"]
    two = request.signatures[:2]
    with pytest.raises(AbortedError, match="2 valid identical"):
        r.clients["s0"].receive(replace(request, signatures=two + two + two))


def test_server_refuses_a_second_advertisement_from_one_site() -> None:
    r = Round(n=4, t=3)
    ad = r.clients["s0"].start()
    r.server.receive(ad)
    with pytest.raises(RemoteProtocolError, match="advertised twice") as info:
        r.server.receive(ad)
    assert info.value.peer == "s0"
    assert "s0" in r.server.excluded


# ----------------------------------------------------------------------------- shares


def test_tampered_redirected_or_truncated_envelopes_are_refused() -> None:
    r = Round(n=4, t=3)
    deliveries = r.share(r.advertise())
    d0 = deliveries["s0"]
    assert isinstance(d0, ShareDelivery)
    first = d0.envelopes[0]
    flipped = bytes([first.ciphertext[0] ^ 1]) + first.ciphertext[1:]
    cases = {
        "s0": replace(d0, envelopes=(replace(first, ciphertext=flipped), *d0.envelopes[1:])),
    }
    _refuses(r, "s0", cases["s0"], "share envelope rejected", peer=first.sender)
    # An envelope meant for s0, re-addressed to s1: AD binds the receiver.
    d1 = deliveries["s1"]
    assert isinstance(d1, ShareDelivery)
    stolen = next(e for e in d0.envelopes if e.sender == "s2")
    redirected = replace(stolen, receiver="s1")
    others = tuple(e for e in d1.envelopes if e.sender != "s2")
    _refuses(r, "s1", replace(d1, envelopes=(*others, redirected)), "share envelope rejected", "s2")
    d2 = deliveries["s2"]
    assert isinstance(d2, ShareDelivery)
    cut = replace(d2.envelopes[0], ciphertext=d2.envelopes[0].ciphertext[:20])
    _refuses(
        r,
        "s2",
        replace(d2, envelopes=(cut, *d2.envelopes[1:])),
        "share envelope rejected",
        d2.envelopes[0].sender,
    )


def test_forged_share_from_a_corrupt_site_is_identified_and_the_sum_is_still_right() -> None:
    r = Round(n=5, t=3)
    requests = _unmask_requests(r)
    responses = r.to_clients(requests)
    bad = responses["s4"]
    assert isinstance(bad, UnmaskResponse)
    share = bad.self_mask_shares[0]
    forged_value = bytes([share.value[0] ^ 1]) + share.value[1:]
    forged = replace(
        bad, self_mask_shares=(replace(share, value=forged_value), *bad.self_mask_shares[1:])
    )
    r.server.receive(forged)
    for site in ("s0", "s1", "s2", "s3"):
        r.server.receive(responses[site])  # type: ignore[arg-type]
    assert r.server.rejected_shares == (("s4", share.owner, "self-mask"),)
    out = r.server.finish()
    assert np.array_equal(out.total, expected_sum(r.sites))


def test_dealer_with_a_bad_commitment_aborts_the_round_without_blaming_holders() -> None:
    r = Round(n=4, t=3)
    broadcasts = r.advertise()
    replies = r.to_clients(broadcasts)
    cheat = replies["s3"]
    assert isinstance(cheat, ShareKeys)
    r.to_server({s: m for s, m in replies.items() if s != "s3"})
    r.server.receive(replace(cheat, mask_key_commitment=bytes(len(cheat.mask_key_commitment))))
    requests = r.mask(r.server.close_stage(), ["s0", "s1", "s2"])  # s3 drops after sharing
    unmask = r.sign(requests)
    r.to_server(r.to_clients(unmask))
    assert r.server.excluded == frozenset()
    assert {(owner, kind) for _, owner, kind in r.server.rejected_shares} == {("s3", "mask-key")}
    with pytest.raises(AbortedError, match="mask-key secret of 's3'"):
        r.server.finish()


def test_malformed_share_or_both_kinds_for_one_owner_are_refused() -> None:
    r = Round(n=4, t=3)
    requests = _unmask_requests(r)
    responses = r.to_clients(requests)
    bad = responses["s1"]
    assert isinstance(bad, UnmaskResponse)
    short = replace(bad, self_mask_shares=(replace(bad.self_mask_shares[0], value=b"\x00" * 5),))
    with pytest.raises(RemoteProtocolError) as info:
        r.server.receive(short)
    assert info.value.peer == "s1"
    honest = responses["s2"]
    assert isinstance(honest, UnmaskResponse)
    both = replace(
        honest,
        mask_key_shares=(RevealedShare(owner="s0", index=3, value=bytes(98)),),
    )
    with pytest.raises(RemoteProtocolError, match="mask-key shares are not exactly one") as info:
        r.server.receive(both)
    assert info.value.peer == "s2"


# ----------------------------------------------------------------------------- different model


def test_different_global_model_sent_to_one_site_isolates_nobody() -> None:
    r = Round(n=4, t=3, contexts={"s0": b"crafted-model"})
    ads = {s: r.clients[s].start() for s in r.sites}
    with pytest.raises(RemoteProtocolError, match="another session") as info:
        r.server.receive(ads["s0"])
    assert info.value.peer == "s0"
    for site in ("s1", "s2", "s3"):
        r.server.receive(ads[site])
    broadcasts = r.server.close_stage()
    # A malicious server forwarding s0's advertisement anyway: honest sites refuse it.
    honest = broadcasts["s1"]
    assert isinstance(honest, KeyBroadcast)
    forwarded = replace(honest, advertisements=(*honest.advertisements, ads["s0"]))
    _refuses(r, "s1", forwarded, "another version, setup or round", "s0")
    # s0, bound to the model it was sent, refuses everyone else's keys: it never sends an input.
    _refuses(r, "s0", replace(forwarded, session_id=r.clients["s0"].setup_id), "setup", "s1")


# ----------------------------------------------------------------------------- corrupt sites


def test_low_order_public_key_from_a_corrupt_site_is_refused() -> None:
    r = Round(n=4, t=3)
    honest = r.clients["s1"].start()
    payload = encoding.advertisement_payload(
        setup=r.server.setup_id,
        round_index=0,
        site="s1",
        mask_public=bytes(32),
        encryption_public=honest.encryption_public,
    )
    signature = r.keys["s1"].sign(payload, label=LABEL_KEY_ADVERTISEMENT)
    weak = replace(honest, mask_public=bytes(32), signature=signature)
    with pytest.raises(RemoteProtocolError, match="low-order") as info:
        r.server.receive(weak)
    assert info.value.peer == "s1"
    ads = {s: r.clients[s].start() for s in ("s0", "s2", "s3")}
    r.to_server(ads)
    broadcast = r.server.close_stage()["s0"]
    assert isinstance(broadcast, KeyBroadcast)
    forwarded = replace(broadcast, advertisements=(*broadcast.advertisements, weak))
    _refuses(r, "s0", forwarded, "low-order", peer="s1")


def test_site_excluded_after_sharing_keys_counts_as_dropped() -> None:
    r = Round(n=5, t=3)
    broadcasts = r.advertise()
    replies = r.to_clients(broadcasts)
    r.to_server(replies)
    with pytest.raises(RemoteProtocolError, match="not expected"):
        r.server.receive(replies["s2"])  # type: ignore[arg-type]
    deliveries = r.server.close_stage()
    assert "s2" not in deliveries
    out = r.unmask(r.sign(r.mask(deliveries)))
    assert out.contributors == frozenset({"s0", "s1", "s3", "s4"})
    assert np.array_equal(out.total, expected_sum(out.contributors))


def test_sparse_graph_needs_a_global_quorum_not_just_t_signatures() -> None:
    """With k << n, t signatures per view could be found twice; a global majority cannot."""
    r = Round(n=8, t=3, k=4)
    assert r.config.quorum == 5
    requests = _unmask_requests(r)
    request = requests["s0"]
    assert len(request.signatures) == 8
    with pytest.raises(AbortedError, match="only 4 valid identical consistency signatures, need 5"):
        r.clients["s0"].receive(replace(request, signatures=request.signatures[:4]))
    response = r.clients["s1"].receive(replace(requests["s1"], signatures=request.signatures[:5]))
    assert isinstance(response, UnmaskResponse)


def test_different_key_sets_to_different_sites_split_the_session() -> None:
    """Omitting one advertisement for one site changes its session id: nothing it seals opens."""
    r = Round(n=4, t=3)
    broadcasts = r.advertise()
    b0 = broadcasts["s0"]
    assert isinstance(b0, KeyBroadcast)
    partial = replace(b0, advertisements=tuple(a for a in b0.advertisements if a.sender != "s3"))
    shares0 = r.clients["s0"].receive(partial)
    assert r.clients["s0"].session_id != r.server.session_id
    with pytest.raises(RemoteProtocolError, match="another session"):
        r.server.receive(shares0)  # type: ignore[arg-type]
    # Even if the server forwards s0's envelopes with a rewritten header, they do not open.
    replies = r.to_clients(broadcasts, ["s1", "s2", "s3"])
    r.to_server(replies)
    deliveries = r.server.close_stage()
    d1 = deliveries["s1"]
    assert isinstance(d1, ShareDelivery)
    assert isinstance(shares0, ShareKeys)
    from_s0 = next(e for e in shares0.envelopes if e.receiver == "s1")
    _refuses(r, "s1", replace(d1, envelopes=(*d1.envelopes, from_s0)), "envelope rejected", "s0")


def test_substituted_non_neighbour_keys_split_the_session_in_a_sparse_graph() -> None:
    r = Round(n=8, t=3, k=4)
    broadcasts = r.advertise()
    b0 = broadcasts["s0"]
    assert isinstance(b0, KeyBroadcast)
    stranger = next(s for s in r.sites if s != "s0" and s not in r.clients["s0"]._neighbours)
    fresh = AgreementKeyPair.from_private_bytes(b"\x09" * 32)
    ads = tuple(
        replace(a, mask_public=fresh.public) if a.sender == stranger else a
        for a in b0.advertisements
    )
    shares = r.clients["s0"].receive(replace(b0, advertisements=ads))
    assert r.clients["s0"].session_id != r.server.session_id
    with pytest.raises(RemoteProtocolError, match="another session"):
        r.server.receive(shares)  # type: ignore[arg-type]
    # The same substitution of a *neighbour's* key is caught by its signature.
    s1_neighbour = sorted(r.clients["s1"]._neighbours)[0]
    b1 = broadcasts["s1"]
    assert isinstance(b1, KeyBroadcast)
    substituted = tuple(
        replace(a, mask_public=fresh.public) if a.sender == s1_neighbour else a
        for a in b1.advertisements
    )
    _refuses(r, "s1", replace(b1, advertisements=substituted), "signature", peer=s1_neighbour)
