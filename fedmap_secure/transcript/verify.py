"""Offline verification of round transcripts against the roster.

``verify_round(t, roster)`` checks one transcript; ``verify_chain(ts, roster)``
checks a run. Every failure raises ``TranscriptError`` naming what failed and
where (round, site, message); nothing returns False. Checks, in order:

1. Setup: the roster digest is the given roster's, the config digest is the
   recorded config's, the setup id is recomputed from its parts (SPEC §3),
   and the context hash is ``binding.bound_context_hash(model_hash,
   previous_hash)``, so every signature below also covers the chain link.
2. Keys: every advertised site is on the roster, once; its Ed25519 signature
   over the advertisement payload (SPEC §4) verifies under its roster key;
   the session id is recomputed from the setup id and every advertised key.
3. Consistency: survivors and dropped are advertised, disjoint and
   duplicate-free; every view belongs to a survivor and carries a valid
   signature over (session, round, its survivor set, its context hash);
   every view's survivor set equals the round's and its context hash the
   round's (every site saw the same survivors and the same model); at least
   q views (the quorum).
4. Reveals: no responder revealed both kinds for one owner; self-mask shares
   only of survivors, mask-key shares only of dropped sites; responders
   signed the survivor set.
5. Messages: every peer is on the roster; the digest of every message whose
   content the transcript holds (AdvertiseKeys, KeyBroadcast,
   ConsistencyRequest, ConsistencySignature, UnmaskRequest) is recomputed and
   compared; each survivor's masked input and each responder's unmask
   response were received and accepted.
6. Chain: the first transcript links to ``GENESIS`` (or to ``anchor``),
   each next one to the previous transcript's hash, with the section digests
   naming what changed; rounds strictly increase; the last hash equals
   ``head`` when a published head is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.crypto.labels import LABEL_CONSISTENCY, LABEL_KEY_ADVERTISEMENT
from fedmap_secure.crypto.signing import SIGNATURE_SIZE, verify
from fedmap_secure.errors import CryptoError, TranscriptError
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.config import SERVER_ID, Roster
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyBroadcast,
    ServerMessage,
    SurvivorSignature,
    UnmaskRequest,
)
from fedmap_secure.transcript.binding import bound_context_hash
from fedmap_secure.transcript.message_hash import message_digest
from fedmap_secure.transcript.records import (
    GENESIS,
    Direction,
    MessageEntry,
    RoundTranscript,
    ShareKind,
)


def verify_chain(
    transcripts: Sequence[RoundTranscript],
    roster: Roster,
    *,
    anchor: bytes = GENESIS,
    head: bytes | None = None,
) -> None:
    """Verify every round and the links between them (module docstring, step 6)."""
    if not transcripts:
        raise TranscriptError("no transcript to verify")
    previous: RoundTranscript | None = None
    for t in transcripts:
        _check_link(t, previous, anchor)
        verify_round(t, roster)
        previous = t
    last = transcripts[-1]
    if head is not None and last.transcript_hash() != head:
        raise TranscriptError(
            "transcript hash differs from the published chain head (newest round altered)",
            round_index=last.round_index,
        )


def _check_link(t: RoundTranscript, previous: RoundTranscript | None, anchor: bytes) -> None:
    r = t.round_index
    if previous is None:
        if t.previous_hash != anchor:
            raise TranscriptError(
                "chain broken: the first transcript does not link to the chain start "
                "(an earlier round is missing)",
                round_index=r,
            )
        return
    if r <= previous.round_index:
        raise TranscriptError(
            f"chain broken: round {r} follows round {previous.round_index} (rounds reordered)",
            round_index=r,
        )
    if t.previous_hash == previous.transcript_hash():
        return
    chained = dict(t.previous_sections)
    actual = previous.section_digests()
    changed = [name for name, d in actual.items() if chained.get(name) not in (None, d)]
    if "keys" in changed:
        # `previous` verified on its own, so its keys section carries valid site signatures
        # over fresh round keys: another round's keys, not an edit. Round r chained a round
        # that is not in the given history (removed) or `previous` replaced a round.
        raise TranscriptError(
            f"chain broken: round {r} does not chain to round {previous.round_index} (their "
            f"signed keys differ): a round between round {previous.round_index} and round {r} "
            "was removed, or one of them replaced",
            round_index=r,
        )
    if changed and all(name in chained for name in actual):
        raise TranscriptError(
            f"chain broken: section(s) {changed} of round {previous.round_index} differ from "
            f"what round {r} chained (round {previous.round_index} was altered)",
            round_index=previous.round_index,
        )
    raise TranscriptError(
        f"chain broken: does not link to round {previous.round_index} "
        "(a round was removed, reordered or replaced)",
        round_index=r,
    )


def verify_round(t: RoundTranscript, roster: Roster) -> None:
    """Verify one transcript (module docstring, steps 1-5)."""
    _check_setup(t, roster)
    _check_keys(t, roster)
    _check_consistency(t)
    check_view_signatures(t, roster)
    _check_reveals(t)
    _check_messages(t, roster)


def _fail(
    t: RoundTranscript, what: str, site: str | None = None, message: str | None = None
) -> TranscriptError:
    return TranscriptError(what, round_index=t.round_index, site=site, message=message)


def _check_setup(t: RoundTranscript, roster: Roster) -> None:
    if t.roster_digest != roster.digest():
        raise _fail(t, "transcript was recorded for another roster")
    if t.config_digest != t.config.digest() or t.config.n != len(roster.sites):
        raise _fail(t, "config digest does not match the recorded config or roster size")
    setup = encoding.setup_id(
        round_index=t.round_index,
        config_digest=t.config_digest,
        roster_digest=t.roster_digest,
        layout_digest=t.layout_digest,
        context_hash=t.context_hash,
    )
    if setup != t.setup_id:
        raise _fail(t, "setup id does not match its recorded parts")
    if t.context_hash != bound_context_hash(t.model_hash, t.previous_hash):
        raise _fail(t, "context hash does not bind the recorded model hash and chain link")


def _check_keys(t: RoundTranscript, roster: Roster) -> None:
    seen: set[str] = set()
    for ad in t.advertisements:
        where = "AdvertiseKeys"
        if ad.site not in roster:
            raise _fail(t, "unknown site: not on the roster", ad.site, where)
        if ad.site in seen:
            raise _fail(t, "site advertised twice", ad.site, where)
        seen.add(ad.site)
        if not ad.signature:
            raise _fail(t, "advertised keys carry no signature", ad.site, where)
        payload = encoding.advertisement_payload(
            setup=t.setup_id,
            round_index=t.round_index,
            site=ad.site,
            mask_public=ad.mask_public,
            encryption_public=ad.encryption_public,
        )
        _verify(t, roster, ad.site, payload, ad.signature, LABEL_KEY_ADVERTISEMENT, where)
    keys = [(a.site, a.mask_public, a.encryption_public) for a in t.advertisements]
    if encoding.session_id(t.setup_id, keys) != t.session_id:
        raise _fail(t, "session id does not match the setup id and advertised keys")


def _verify(
    t: RoundTranscript,
    roster: Roster,
    site: str,
    payload: bytes,
    signature: bytes,
    label: bytes,
    where: str,
) -> None:
    if len(signature) != SIGNATURE_SIZE:
        raise _fail(t, f"signature must be {SIGNATURE_SIZE} bytes", site, where)
    try:
        verify(roster.public_key(site), payload, signature, label=label)
    except CryptoError:
        raise _fail(t, "signature does not verify under the roster key", site, where) from None


def _unique(t: RoundTranscript, name: str, sites: Sequence[str], allowed: set[str]) -> set[str]:
    if len(set(sites)) != len(sites):
        raise _fail(t, f"{name} list has duplicates")
    unknown = sorted(set(sites) - allowed)
    if unknown:
        raise _fail(t, f"{name} list names sites that did not advertise keys", unknown[0])
    return set(sites)


def _check_consistency(t: RoundTranscript) -> None:
    advertised = {a.site for a in t.advertisements}
    survivors = _unique(t, "survivor", t.survivors, advertised)
    dropped = _unique(t, "dropped", t.dropped, advertised)
    if survivors & dropped:
        raise _fail(t, "a site is both a survivor and dropped", sorted(survivors & dropped)[0])
    for view in t.views:
        where = "ConsistencySignature"
        if view.site not in advertised:
            raise _fail(t, "unknown site: signer did not advertise keys", view.site, where)
        if view.site not in survivors:
            raise _fail(t, "signer is not in the survivor set", view.site, where)
    if len({v.site for v in t.views}) != len(t.views):
        raise _fail(t, "a site has two consistency views")
    if len(t.views) < t.config.quorum:
        raise _fail(t, f"only {len(t.views)} consistency signatures, quorum {t.config.quorum}")


def check_view_signatures(t: RoundTranscript, roster: Roster) -> None:
    """Each view's signature, its survivor set and its model hash (step 3)."""
    for view in t.views:
        where = "ConsistencySignature"
        payload = encoding.consistency_payload(
            session=t.session_id,
            round_index=t.round_index,
            survivors=view.survivors,
            context_hash=view.context_hash,
        )
        if not view.signature:
            raise _fail(t, "survivor set carries no signature", view.site, where)
        _verify(t, roster, view.site, payload, view.signature, LABEL_CONSISTENCY, where)
        if tuple(sorted(view.survivors)) != tuple(sorted(t.survivors)):
            raise _fail(
                t,
                f"site signed survivor set {sorted(view.survivors)}, "
                f"the round's is {sorted(t.survivors)} (split view)",
                view.site,
                where,
            )
        if view.context_hash != t.context_hash:
            raise _fail(
                t, "site signed another model/context hash than the round's", view.site, where
            )


def _check_reveals(t: RoundTranscript) -> None:
    signers = {v.site for v in t.views}
    alive, dropped = set(t.survivors), set(t.dropped)
    kinds: dict[tuple[str, str], set[ShareKind]] = {}
    for x in t.reveals:
        where = "UnmaskResponse"
        if x.responder not in signers:
            raise _fail(
                t, "responder revealed shares without signing the survivor set", x.responder, where
            )
        kinds.setdefault((x.responder, x.owner), set()).add(x.kind)
        if len(kinds[(x.responder, x.owner)]) == 2:
            raise _fail(
                t, f"revealed BOTH self-mask and mask-key shares of {x.owner!r}", x.responder, where
            )
        if x.kind is ShareKind.SELF_MASK and x.owner not in alive:
            raise _fail(
                t, f"revealed a self-mask share of non-survivor {x.owner!r}", x.responder, where
            )
        if x.kind is ShareKind.MASK_KEY and x.owner not in dropped:
            raise _fail(
                t, f"revealed a mask-key share of non-dropped {x.owner!r}", x.responder, where
            )


def _expected_messages(t: RoundTranscript) -> dict[tuple[Direction, str, str], bytes]:
    """Digests of the messages whose content the transcript holds, by (direction, kind, peer)."""
    head = {"version": PROTOCOL_VERSION, "round_index": t.round_index}
    ads = tuple(
        AdvertiseKeys(
            **head,
            session_id=t.setup_id,
            sender=a.site,
            mask_public=a.mask_public,
            encryption_public=a.encryption_public,
            signature=a.signature,
        )
        for a in t.advertisements
        if len(a.signature) == SIGNATURE_SIZE
    )
    out: dict[tuple[Direction, str, str], bytes] = {}
    for ad in ads:
        out[(Direction.RECEIVED, "AdvertiseKeys", ad.sender)] = message_digest(ad)
    broadcast = KeyBroadcast(**head, session_id=t.setup_id, sender=SERVER_ID, advertisements=ads)
    unmask = UnmaskRequest(
        **head,
        session_id=t.session_id,
        sender=SERVER_ID,
        alive=t.survivors,
        dropped=t.dropped,
        signatures=tuple(SurvivorSignature(site=v.site, signature=v.signature) for v in t.views),
    )
    server_messages: list[tuple[str, ServerMessage | ClientMessage]] = []
    for a in t.advertisements:
        server_messages.append((a.site, broadcast))
    for v in t.views:
        request = ConsistencyRequest(
            **head, session_id=t.session_id, sender=SERVER_ID, survivors=v.survivors
        )
        server_messages += [(v.site, request), (v.site, unmask)]
        signed = ConsistencySignature(
            **head, session_id=t.session_id, sender=v.site, signature=v.signature
        )
        out[(Direction.RECEIVED, "ConsistencySignature", v.site)] = message_digest(signed)
    for site, m in server_messages:
        out[(Direction.SENT, type(m).__name__, site)] = message_digest(m)
    return out


def _check_messages(t: RoundTranscript, roster: Roster) -> None:
    expected = _expected_messages(t)
    accepted: set[tuple[str, str]] = set()
    for m in t.messages:
        if m.peer not in roster:
            raise _fail(t, "unknown site: message from/to a site not on the roster", m.peer, m.kind)
        key = (m.direction, m.kind, m.peer)
        if m.accepted and key in expected and expected[key] != m.digest:
            raise _fail(t, _altered(m), m.peer, m.kind)
        if m.accepted and m.direction is Direction.RECEIVED:
            accepted.add((m.kind, m.peer))
    for site in t.survivors:
        if ("MaskedInput", site) not in accepted:
            raise _fail(t, "survivor has no accepted masked input", site, "MaskedInput")
    for site in {x.responder for x in t.reveals}:
        if ("UnmaskResponse", site) not in accepted:
            raise _fail(t, "reveals without an accepted unmask response", site, "UnmaskResponse")


def _altered(m: MessageEntry) -> str:
    way = "received from" if m.direction is Direction.RECEIVED else "sent to"
    return f"recorded digest of the message {way} this site does not match its recorded content"
