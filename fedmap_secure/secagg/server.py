"""The server's SecAgg+ session: a sans-I/O state machine (Bonawitz et al. 2017, Bell et al. 2020).

Drive it with ``receive(site_message)`` for every message that arrives and
``close_stage()`` when the driver decides a stage is over (all expected sites
answered, or its timeout fired); ``close_stage`` returns the messages to send,
keyed by recipient. After the unmask stage, ``finish()`` returns the sum of the
survivors' encoded inputs. Stage changes follow ``stages.SERVER_TRANSITIONS``.

The server is untrusted by the sites; this object is the *honest* server's
logic. It still checks everything a site sends, because a corrupt site must
not be able to break the round for everyone:

- a bad message (wrong stage, session, round, duplicate, bad signature, wrong
  envelope set, malformed share) raises ``RemoteProtocolError`` naming the site
  and *excludes that site* for the rest of the round: it is treated as dropped
  from that point (what it validly contributed before stays). The session
  itself continues, so one corrupt site cannot stop the round.
- a revealed share that fails its commitment is skipped and recorded in
  ``rejected_shares``; it is fatal only if fewer than t valid shares remain.
- closing a stage with fewer than ``t`` sites (``quorum`` for masked inputs and
  signatures) raises ``AbortedError``; the session is then ABORTED (sticky).
- misuse by the driver (closing in the wrong stage, calling after DONE,
  ABORTED or FAILED) raises ``LocalProtocolError`` and is sticky (FAILED).

Memory: masked inputs are added into one running sum as they arrive (O(m)).
The sender of each message is assumed authenticated by the transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto import shamir
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree
from fedmap_secure.crypto.labels import LABEL_CONSISTENCY, LABEL_PAIRWISE_MASK
from fedmap_secure.crypto.prg import MaskTerm, Workers
from fedmap_secure.crypto.signing import verify
from fedmap_secure.errors import (
    AbortedError,
    CryptoError,
    LocalProtocolError,
    RemoteProtocolError,
)
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.client import check_public_keys, verify_advertisement
from fedmap_secure.secagg.config import SERVER_ID, RingSpec, Roster, SecAggConfig
from fedmap_secure.secagg.masking import (
    RunningSum,
    Vector,
    modulus_mask,
    pairwise_mask_term,
    pairwise_sign,
    self_mask_term,
)
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyBroadcast,
    MaskedInput,
    Message,
    RevealedShare,
    ServerMessage,
    ShareDelivery,
    ShareEnvelope,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmap_secure.secagg.round_setup import round_setup
from fedmap_secure.secagg.stages import SERVER_ACCEPTS, ServerStage, next_server_stage

SELF_MASK = "self-mask"
MASK_KEY = "mask-key"


@dataclass(frozen=True, kw_only=True, eq=False)
class RoundOutput:
    """What the server learns: the sum in Z_{2^bits} of the contributors' encoded inputs."""

    total: Vector
    contributors: frozenset[str]
    dropped: frozenset[str]


class ServerSession:
    """The server's state for one round."""

    def __init__(
        self,
        *,
        roster: Roster,
        config: SecAggConfig,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        ring: RingSpec | None = None,
        workers: Workers | None = None,
    ) -> None:
        """``workers``: an optional executor injected by the caller (e.g. a thread pool)
        on which the unmask stage expands the PRG masks side by side; the result is
        bit-identical to the serial one (``crypto.prg.add_masks``)."""
        derived = round_setup(
            roster=roster,
            config=config,
            layout=layout,
            round_index=round_index,
            context=context,
            ring=ring,
        )
        self.round_index = round_index
        self._roster = roster
        self._config = config
        self._length = derived.length
        self._context_hash = derived.context_hash
        self._setup = derived.setup
        self._graph = derived.graph
        self._stage = ServerStage.COLLECTING_KEYS
        self._session = b""
        self._excluded: set[str] = set()
        self._ads: dict[str, AdvertiseKeys] = {}
        self._shares: dict[str, ShareKeys] = {}
        self._delivered: dict[str, frozenset[str]] = {}
        self._survivors: tuple[str, ...] = ()
        self._sum = RunningSum(self._length, config.bits)
        self._workers = workers
        self._signatures: dict[str, bytes] = {}
        self._responses: dict[str, UnmaskResponse] = {}
        self._good: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self._rejected: list[tuple[str, str, str]] = []
        self._holder_cache: dict[str, dict[str, int]] = {}
        self._key_owner: dict[bytes, str] = {}
        self._survivor_set: frozenset[str] = frozenset()
        self._payload: bytes | None = None

    # ------------------------------------------------------------------ public API

    @property
    def stage(self) -> ServerStage:
        return self._stage

    @property
    def session_id(self) -> bytes:
        return self._session

    @property
    def setup_id(self) -> bytes:
        return self._setup

    @property
    def excluded(self) -> frozenset[str]:
        """Sites refused for sending a bad message this round."""
        return frozenset(self._excluded)

    @property
    def rejected_shares(self) -> tuple[tuple[str, str, str], ...]:
        """(responder, owner, kind) of every revealed share that failed its commitment check."""
        return tuple(self._rejected)

    def receive(self, message: ClientMessage | ServerMessage) -> None:
        """Accept one site message, or raise ``RemoteProtocolError`` and exclude its sender."""
        self._require_open()
        peer = message.sender
        if peer in self._excluded:
            raise RemoteProtocolError(peer, "site was excluded earlier in this round")
        try:
            self._accept(message)
        except RemoteProtocolError:
            self._excluded.add(peer)
            raise
        except CryptoError as exc:
            self._excluded.add(peer)
            raise RemoteProtocolError(peer, str(exc)) from None

    def close_stage(self) -> dict[str, ServerMessage]:
        """End the current collecting stage; returns each recipient's message."""
        self._require_open()
        if self._stage is ServerStage.COLLECTING_UNMASK:
            self._fail("the unmask stage ends with finish(), not close_stage()")
        closers = {
            ServerStage.COLLECTING_KEYS: self._close_keys,
            ServerStage.COLLECTING_SHARES: self._close_shares,
            ServerStage.COLLECTING_INPUTS: self._close_inputs,
            ServerStage.COLLECTING_SIGNATURES: self._close_signatures,
        }
        outgoing = closers[self._stage]()
        self._stage = next_server_stage(self._stage)
        return outgoing

    def finish(self) -> RoundOutput:
        """Reconstruct the needed secrets, remove the masks and return the sum."""
        self._require_open()
        if self._stage is not ServerStage.COLLECTING_UNMASK:
            self._fail(f"finish() is not allowed in server stage {self._stage.value}")
        output = self._unmask()
        self._stage = next_server_stage(self._stage)
        self._erase()
        return output

    # ------------------------------------------------------------------ machinery

    def _require_open(self) -> None:
        if self._stage in (ServerStage.DONE, ServerStage.ABORTED, ServerStage.FAILED):
            raise LocalProtocolError(f"server session is {self._stage.value}")

    def _fail(self, problem: str) -> None:
        self._stage = ServerStage.FAILED
        self._erase()
        raise LocalProtocolError(problem)

    def _abort(self, problem: str, *, culprits: frozenset[str] = frozenset()) -> None:
        self._stage = ServerStage.ABORTED
        self._erase()
        raise AbortedError(problem, culprits=culprits)

    def _need(
        self,
        sites: Sequence[str] | set[str] | frozenset[str],
        what: str,
        *,
        threshold: int | None = None,
    ) -> None:
        needed = self._config.t if threshold is None else threshold
        if len(sites) < needed:
            self._abort(f"only {len(sites)} {what}, need {needed}")

    def _erase(self) -> None:
        self._shares.clear()
        self._responses.clear()
        self._good.clear()
        self._sum = RunningSum(0, self._config.bits)

    def _accept(self, message: ClientMessage | ServerMessage) -> None:
        peer = message.sender
        expected = SERVER_ACCEPTS[self._stage]
        if type(message) is not expected:
            raise RemoteProtocolError(
                peer, f"{type(message).__name__} is not allowed in server stage {self._stage.value}"
            )
        if peer not in self._roster:
            raise RemoteProtocolError(peer, "sender is not on the roster")
        session = self._setup if isinstance(message, AdvertiseKeys) else self._session
        check_header(message, session=session, round_index=self.round_index)
        if isinstance(message, AdvertiseKeys):
            self._on_advertise(message)
        elif isinstance(message, ShareKeys):
            self._on_share_keys(message)
        elif isinstance(message, MaskedInput):
            self._on_masked_input(message)
        elif isinstance(message, ConsistencySignature):
            self._on_signature(message)
        elif isinstance(message, UnmaskResponse):
            self._on_unmask(message)

    def _holders(self, owner: str) -> list[str]:
        """Sorted holders of ``owner``'s secrets among the advertised sites."""
        return list(self._holder_positions(owner))

    def _holder_positions(self, owner: str) -> dict[str, int]:
        """Holder -> share index (1-based) for ``owner``, cached once the key stage closed
        (the advertised set no longer changes), so checking a share is O(1), not O(k)."""
        cached = self._holder_cache.get(owner)
        if cached is None:
            holders = sorted(({owner} | self._graph[owner]) & self._ads.keys())
            cached = {site: i + 1 for i, site in enumerate(holders)}
            if self._stage is not ServerStage.COLLECTING_KEYS:
                self._holder_cache[owner] = cached
        return cached

    # ------------------------------------------------------------------ stage 1: keys

    def _on_advertise(self, ad: AdvertiseKeys) -> None:
        if ad.sender in self._ads:
            raise RemoteProtocolError(ad.sender, "site advertised twice")
        verify_advertisement(
            ad, roster=self._roster, setup=self._setup, round_index=self.round_index
        )
        check_public_keys(ad)
        for key in (ad.mask_public, ad.encryption_public):  # O(1) per key, not O(n) per site
            other = self._key_owner.get(key)
            if other is not None:
                raise RemoteProtocolError(ad.sender, f"reuses public keys of {other!r}")
        self._ads[ad.sender] = ad
        self._key_owner[ad.mask_public] = self._key_owner[ad.encryption_public] = ad.sender

    def _close_keys(self) -> dict[str, ServerMessage]:
        self._need(self._ads.keys() - self._excluded, "sites advertised keys")
        ads = tuple(self._ads[s] for s in sorted(self._ads))
        self._session = encoding.session_id(
            self._setup, [(a.sender, a.mask_public, a.encryption_public) for a in ads]
        )
        broadcast = KeyBroadcast(
            version=PROTOCOL_VERSION,
            session_id=self._setup,
            round_index=self.round_index,
            sender=SERVER_ID,
            advertisements=ads,
        )
        return {site: broadcast for site in self._ads if site not in self._excluded}

    # ------------------------------------------------------------------ stage 2: shares

    def _on_share_keys(self, message: ShareKeys) -> None:
        peer = message.sender
        if peer not in self._ads or peer in self._shares:
            raise RemoteProtocolError(peer, "share keys from a site not expected to send them")
        holders = self._holders(peer)
        expected = set(holders) - {peer}
        receivers = [e.receiver for e in message.envelopes]
        if any(e.sender != peer for e in message.envelopes):
            raise RemoteProtocolError(peer, "envelope claims another sender")
        if len(set(receivers)) != len(receivers) or set(receivers) != expected:
            raise RemoteProtocolError(peer, "envelopes do not go exactly once to each holder")
        size = shamir.COMMITMENT_ENTRY_SIZE * len(holders)
        if len(message.self_mask_commitment) != size or len(message.mask_key_commitment) != size:
            raise RemoteProtocolError(peer, f"share commitments must be {size} bytes")
        self._shares[peer] = message

    def _close_shares(self) -> dict[str, ServerMessage]:
        for site in self._excluded & set(self._shares):
            del self._shares[site]  # excluded before the stage closed: not part of U2
        senders = sorted(self._shares)
        self._need(senders, "sites shared keys")
        inbox: dict[str, list[ShareEnvelope]] = {receiver: [] for receiver in senders}
        for sender in senders:  # one pass over all envelopes (O(n k), not O(n^2 k))
            for e in self._shares[sender].envelopes:
                if e.receiver in inbox:
                    inbox[e.receiver].append(e)
        out: dict[str, ServerMessage] = {}
        for receiver in senders:
            envelopes = tuple(inbox[receiver])  # in sender order, as before
            self._delivered[receiver] = frozenset(e.sender for e in envelopes)
            out[receiver] = ShareDelivery(
                version=PROTOCOL_VERSION,
                session_id=self._session,
                round_index=self.round_index,
                sender=SERVER_ID,
                receiver=receiver,
                envelopes=envelopes,
            )
        return out

    # ------------------------------------------------------------------ stage 3: masked inputs

    def _on_masked_input(self, message: MaskedInput) -> None:
        peer = message.sender
        if peer not in self._delivered or peer in self._survivors:
            raise RemoteProtocolError(peer, "masked input from a site not expected to send one")
        y = message.masked
        if y.shape != (self._length,):
            raise RemoteProtocolError(peer, f"masked input must have length {self._length}")
        if self._config.bits < 64 and y.size and int(y.max()) > modulus_mask(self._config.bits):
            raise RemoteProtocolError(
                peer, f"masked input has values outside Z_2^{self._config.bits}"
            )
        self._sum.add(y)
        self._survivors = (*self._survivors, peer)

    def _close_inputs(self) -> dict[str, ServerMessage]:
        self._need(self._survivors, "masked inputs", threshold=self._config.quorum)
        self._survivors = tuple(sorted(self._survivors))
        self._survivor_set = frozenset(self._survivors)
        request = ConsistencyRequest(
            version=PROTOCOL_VERSION,
            session_id=self._session,
            round_index=self.round_index,
            sender=SERVER_ID,
            survivors=self._survivors,
        )
        return {site: request for site in self._survivors if site not in self._excluded}

    # ------------------------------------------------------------------ stage 4: consistency

    def _on_signature(self, message: ConsistencySignature) -> None:
        peer = message.sender
        if peer not in self._survivor_set or peer in self._signatures:
            raise RemoteProtocolError(peer, "consistency signature from a site not expected")
        if self._payload is None:  # the same O(n) bytes for every signer: encode once
            self._payload = encoding.consistency_payload(
                session=self._session,
                round_index=self.round_index,
                survivors=self._survivors,
                context_hash=self._context_hash,
            )
        payload = self._payload
        try:
            verify(
                self._roster.public_key(peer), payload, message.signature, label=LABEL_CONSISTENCY
            )
        except CryptoError:
            raise RemoteProtocolError(peer, "consistency signature does not verify") from None
        self._signatures[peer] = message.signature

    def _close_signatures(self) -> dict[str, ServerMessage]:
        signers = sorted(set(self._signatures) - self._excluded)
        self._need(signers, "consistency signatures", threshold=self._config.quorum)
        request = UnmaskRequest(
            version=PROTOCOL_VERSION,
            session_id=self._session,
            round_index=self.round_index,
            sender=SERVER_ID,
            alive=self._survivors,
            dropped=tuple(sorted(set(self._shares) - set(self._survivors))),
            signatures=tuple(
                SurvivorSignature(site=s, signature=self._signatures[s]) for s in signers
            ),
        )
        return {site: request for site in signers}

    # ------------------------------------------------------------------ stage 5: unmask

    def _on_unmask(self, message: UnmaskResponse) -> None:
        """Check the whole response, then keep its shares (check, then commit).

        A share whose commitment check fails is skipped and recorded in
        ``rejected_shares`` rather than blamed on the responder: the server cannot
        tell a forged share from a dealer that committed to something else.
        """
        peer = message.sender
        if peer not in self._signatures or peer in self._responses:
            raise RemoteProtocolError(peer, "unmask response from a site not expected")
        owners = self._delivered[peer] | {peer}
        alive = self._survivor_set
        checked = [
            *self._check_shares(peer, message.self_mask_shares, owners & alive, SELF_MASK),
            *self._check_shares(peer, message.mask_key_shares, owners - alive, MASK_KEY),
        ]
        self._responses[peer] = message
        good = self._good
        for owner, kind, point in checked:
            if point is not None:
                good.setdefault((owner, kind), []).append(point)
            else:
                self._rejected.append((peer, owner, kind))

    def _check_shares(
        self,
        peer: str,
        shares: Sequence[RevealedShare],
        owners: set[str] | frozenset[str],
        kind: str,
    ) -> list[tuple[str, str, tuple[int, int] | None]]:
        """One share of ``kind`` per owner at ``peer``'s index, each as its point (index, y),
        or None where it fails its dealer's commitment (``shamir.committed_point``).

        Over half a million shares arrive at n = 1000, so this loop is kept lean: holder
        positions are cached per owner, and no ``Share`` object is built."""
        if len(shares) != len(owners) or {s.owner for s in shares} != owners:
            raise RemoteProtocolError(peer, f"{kind} shares are not exactly one per expected owner")
        self_mask = kind == SELF_MASK
        out = []
        for revealed in shares:
            owner = revealed.owner
            if revealed.index != self._holder_positions(owner).get(peer):
                raise RemoteProtocolError(peer, f"{kind} share of {owner!r}: wrong index")
            dealt = self._shares[owner]
            commitment = dealt.self_mask_commitment if self_mask else dealt.mask_key_commitment
            point = shamir.committed_point(revealed.index, revealed.value, commitment)
            out.append((owner, kind, point))
        return out

    def _reconstruct_all(self, needed: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """Rebuild every needed (owner, kind) secret in one batch (``shamir.combine_points``).

        Each secret is interpolated from its ``t`` valid shares with the smallest
        indices (SPEC 6.5); further valid shares are not interpolated: a dealer
        whose committed shares disagree could only change its own contribution,
        and a rebuilt mask key is checked against the advertised key anyway.
        Too few valid shares of any secret aborts the round, naming it.
        """
        t = self._config.t
        batch = [sorted(self._good.get(item, []))[:t] for item in needed]
        names = [f"the {kind} secret of {owner!r}" for owner, kind in needed]
        try:  # every point in _good passed its dealer's commitment check on arrival
            secrets = shamir.combine_points(batch, threshold=t, names=names)
        except CryptoError as exc:
            short = frozenset(
                owner
                for (owner, _kind), points in zip(needed, batch, strict=True)
                if len({x for x, _ in points}) < t
            )
            self._abort(f"cannot rebuild {exc}", culprits=short)
            raise  # unreachable: _abort raises
        return dict(zip(needed, secrets, strict=True))

    def _unmask(self) -> RoundOutput:
        """Rebuild every needed seed first (one batch), then remove all masks in one pass."""
        self._need(set(self._responses), "unmask responses")
        session = self._session
        alive = frozenset(self._survivors)
        dropped = frozenset(self._shares) - alive
        partners = {
            gone: [s for s in self._survivors if gone in self._delivered[s]]
            for gone in sorted(dropped)
        }
        needed = [(site, SELF_MASK) for site in self._survivors]
        needed += [(gone, MASK_KEY) for gone, sites in partners.items() if sites]
        secrets = self._reconstruct_all(needed)
        terms: list[MaskTerm] = [
            self_mask_term(secrets[(site, SELF_MASK)], session=session, site=site, sign=-1)
            for site in self._survivors
        ]
        for gone, sites in partners.items():
            if sites:
                terms.extend(self._orphaned_masks(gone, secrets[(gone, MASK_KEY)], sites))
        self._sum.add_masks(terms, workers=self._workers)
        return RoundOutput(total=self._sum.take(), contributors=alive, dropped=dropped)

    def _orphaned_masks(
        self, gone: str, mask_key: bytes, partners: Sequence[str]
    ) -> list[MaskTerm]:
        """Terms cancelling the pairwise masks ``partners`` (survivors) share with ``gone``."""
        session = self._session
        keys = AgreementKeyPair.from_private_bytes(mask_key)
        if keys.public != self._ads[gone].mask_public:
            self._abort(f"rebuilt mask key of {gone!r} does not match its advertised key")
        terms = []
        for site in partners:
            seed = agree(
                keys, self._ads[site].mask_public, label=LABEL_PAIRWISE_MASK, context=session
            )
            terms.append(pairwise_mask_term(seed, session=session, sign=-pairwise_sign(site, gone)))
        return terms


def check_header(message: Message, *, session: bytes, round_index: int) -> None:
    """``RemoteProtocolError`` naming the sender unless version, session and round match."""
    if message.version != PROTOCOL_VERSION:
        raise RemoteProtocolError(message.sender, f"protocol version {message.version} unsupported")
    if message.round_index != round_index:
        raise RemoteProtocolError(
            message.sender, f"message for round {message.round_index}, expected {round_index}"
        )
    if message.session_id != session:
        raise RemoteProtocolError(message.sender, "message belongs to another session")
