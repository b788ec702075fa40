"""A site's SecAgg+ session: a sans-I/O state machine (Bonawitz et al. 2017 with Bell et al. 2020).

Drive it with ``start()``, ``receive(server_message)`` and ``submit_input(vector)``;
each returns the message to send to the server (or ``None``). It never touches
a socket, a clock or a file. Stage changes follow ``stages.CLIENT_TRANSITIONS``.

What each step checks, and the threat it stops (protocol/SPEC.md §6):

- KeyBroadcast: every neighbour's advertisement is signed by its *roster*
  identity key over the setup id (version, round, config, roster, layout,
  context) and has no low-order key, our own keys are unchanged, no site
  appears twice; all advertisements enter the session id -> the server cannot
  substitute keys, replay another round, or show us a different model.
- ShareDelivery: envelopes open under the pairwise share key with AD
  (session, stage, sender, receiver); indices match -> forged, replayed or
  redirected shares are refused.
- ConsistencyRequest: we sign (session, survivors, context digest) only if the
  survivor set is plausible (we are in it, it has >= quorum sites, >= t of our
  holders, and our alive neighbours all shared keys with us).
- UnmaskRequest: alive equals what we signed, alive and dropped are disjoint,
  known and duplicate-free, consistent with who shared keys with us, and
  carries >= quorum valid signatures on the same payload -> we reveal, per
  neighbour, exactly one kind of share: self-mask for alive, mask key for dropped.

Any failure is sticky (stage FAILED) and erases the session's secrets. Errors:
``RemoteProtocolError(peer)`` when a message is bad (``peer`` is the server or
the site whose forwarded item failed), ``AbortedError`` when too few sites
remain (t, or the quorum for survivors and signatures), ``LocalProtocolError``
when our own caller misuses the session.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

from fedmap_secure import PROTOCOL_VERSION
from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto import shamir
from fedmap_secure.crypto.agreement import AgreementKeyPair, agree
from fedmap_secure.crypto.envelope import envelope_ad, open_sealed, seal
from fedmap_secure.crypto.labels import (
    LABEL_CONSISTENCY,
    LABEL_KEY_ADVERTISEMENT,
    LABEL_PAIRWISE_MASK,
    LABEL_SHARE_ENCRYPTION,
)
from fedmap_secure.crypto.signing import IdentityKey, verify
from fedmap_secure.errors import (
    AbortedError,
    ConfigError,
    CryptoError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from fedmap_secure.secagg import encoding
from fedmap_secure.secagg.config import SERVER_ID, RingSpec, Roster, SecAggConfig
from fedmap_secure.secagg.masking import (
    Vector,
    apply_masks,
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
    UnmaskRequest,
    UnmaskResponse,
)
from fedmap_secure.secagg.round_setup import round_setup
from fedmap_secure.secagg.stages import ClientStage, LocalEvent, next_client_stage

SEED_SIZE = 32
T = TypeVar("T")


class ClientSession:
    """One site's state for one round. Secrets live only here and are erased at the end."""

    def __init__(
        self,
        *,
        site_id: str,
        identity: IdentityKey,
        roster: Roster,
        config: SecAggConfig,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        random_bytes: Callable[[int], bytes] = os.urandom,
        ring: RingSpec | None = None,
    ) -> None:
        if site_id not in roster:
            raise ConfigError(f"site {site_id!r} is not on the roster")
        if roster.public_key(site_id) != identity.public:
            raise ConfigError(f"site {site_id!r}: identity key does not match the roster")
        derived = round_setup(
            roster=roster,
            config=config,
            layout=layout,
            round_index=round_index,
            context=context,
            ring=ring,
        )
        self.site_id = site_id
        self.round_index = round_index
        self._identity = identity
        self._roster = roster
        self._config = config
        self._random_bytes = random_bytes
        self._length = derived.length
        self._context_hash = derived.context_hash
        self._setup = derived.setup
        self._neighbours = derived.graph[site_id]
        self._graph = derived.graph
        self._stage = ClientStage.READY
        self._session = b""
        self._peers: dict[str, AdvertiseKeys] = {}
        self._received_from: frozenset[str] = frozenset()
        self._signed_survivors: tuple[str, ...] = ()
        self._mask_keys: AgreementKeyPair | None = None
        self._enc_keys: AgreementKeyPair | None = None
        self._self_seed: bytes | None = None
        self._held: dict[str, tuple[shamir.Share, shamir.Share]] = {}
        self._share_keys: dict[str, bytes] = {}

    # ------------------------------------------------------------------ public API

    @property
    def stage(self) -> ClientStage:
        return self._stage

    @property
    def session_id(self) -> bytes:
        """The session id once keys are known (empty before)."""
        return self._session

    @property
    def setup_id(self) -> bytes:
        return self._setup

    def start(self) -> AdvertiseKeys:
        """Stage 1: make fresh key pairs and sign them (Bonawitz AdvertiseKeys)."""
        return self._run(LocalEvent.START, self._advertise)

    def receive(self, message: ServerMessage | ClientMessage) -> ClientMessage | None:
        """Handle one message from the server; returns the reply, if any."""
        return self._run(type(message), lambda: self._dispatch(message))

    def submit_input(self, encoded: Vector) -> MaskedInput:
        """Stage 3: mask the encoded input (``quantize.Quantizer.encode``) and return it."""
        return self._run(LocalEvent.SUBMIT_INPUT, lambda: self._mask(encoded))

    # ------------------------------------------------------------------ machinery

    def _run(self, event: type[Message] | LocalEvent, handler: Callable[[], T]) -> T:
        """Check the transition table, run ``handler``, commit the stage; fail stickily."""
        if self._stage is ClientStage.FAILED:
            raise LocalProtocolError(f"site {self.site_id!r}: session has failed")
        try:
            next_stage = next_client_stage(self._stage, event)
        except LocalProtocolError as exc:
            self._fail()
            if isinstance(event, LocalEvent):
                raise
            raise RemoteProtocolError(SERVER_ID, str(exc)) from None
        try:
            result = handler()
        except ProtocolError:
            self._fail()
            raise
        except (CryptoError, ConfigError) as exc:
            self._fail()
            raise LocalProtocolError(f"site {self.site_id!r}: {exc}") from exc
        except BaseException:
            self._fail()
            raise
        self._stage = next_stage
        if next_stage is ClientStage.DONE:
            self._erase()
        return result

    def _fail(self) -> None:
        self._stage = ClientStage.FAILED
        self._erase()

    def _erase(self) -> None:
        """Drop every reference to round secrets (keys, seed, held shares)."""
        self._mask_keys = None
        self._enc_keys = None
        self._self_seed = None
        self._held.clear()
        self._share_keys.clear()

    def _dispatch(self, message: ServerMessage | ClientMessage) -> ClientMessage | None:
        if isinstance(message, KeyBroadcast):
            return self._on_keys(message)
        if isinstance(message, ShareDelivery):
            self._on_shares(message)
            return None
        if isinstance(message, ConsistencyRequest):
            return self._on_consistency(message)
        if isinstance(message, UnmaskRequest):
            return self._on_unmask(message)
        raise LocalProtocolError(f"unhandled message {type(message).__name__}")  # unreachable

    def _check_header(self, message: Message, *, session: bytes) -> None:
        """Reject a message from another version, session or round, or not from the server."""
        if message.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(SERVER_ID, f"protocol version {message.version} unsupported")
        if message.round_index != self.round_index:
            raise RemoteProtocolError(
                SERVER_ID, f"message for round {message.round_index}, expected {self.round_index}"
            )
        if message.session_id != session:
            raise RemoteProtocolError(SERVER_ID, "message belongs to another session")
        if message.sender != SERVER_ID:
            raise RemoteProtocolError(SERVER_ID, f"message claims sender {message.sender!r}")

    def _require(self, condition: bool, problem: str) -> None:
        if not condition:
            raise RemoteProtocolError(SERVER_ID, problem)

    def _check_ids(self, name: str, sites: Iterable[str]) -> frozenset[str]:
        """Sites must be advertised in this session and listed once."""
        listed = list(sites)
        unique = frozenset(listed)
        self._require(len(unique) == len(listed), f"{name} lists a site more than once")
        unknown = sorted(unique - self._peers.keys())
        self._require(not unknown, f"{name} names sites outside this session: {unknown}")
        return unique

    def _holders(self, owner: str) -> list[str]:
        """Sorted holders of ``owner``'s secrets: itself and its advertised neighbours."""
        return sorted(({owner} | self._graph[owner]) & self._peers.keys())

    # ------------------------------------------------------------------ stage 1

    def _advertise(self) -> AdvertiseKeys:
        self._mask_keys = AgreementKeyPair.generate(self._random_bytes)
        self._enc_keys = AgreementKeyPair.generate(self._random_bytes)
        payload = encoding.advertisement_payload(
            setup=self._setup,
            round_index=self.round_index,
            site=self.site_id,
            mask_public=self._mask_keys.public,
            encryption_public=self._enc_keys.public,
        )
        signature = self._identity.sign(payload, label=LABEL_KEY_ADVERTISEMENT)
        return AdvertiseKeys(
            version=PROTOCOL_VERSION,
            session_id=self._setup,
            round_index=self.round_index,
            sender=self.site_id,
            mask_public=self._mask_keys.public,
            encryption_public=self._enc_keys.public,
            signature=signature,
        )

    # ------------------------------------------------------------------ stage 2

    def _on_keys(self, message: KeyBroadcast) -> ShareKeys:
        self._check_header(message, session=self._setup)
        peers: dict[str, AdvertiseKeys] = {}
        for ad in message.advertisements:
            self._require(ad.sender not in peers, f"site {ad.sender!r} advertised twice")
            # Keys we will use (neighbours', our own) are verified in full; the others only
            # enter the session id, so a substitution there splits the session instead.
            full = ad.sender in self._neighbours or ad.sender == self.site_id
            verify_advertisement(
                ad,
                roster=self._roster,
                setup=self._setup,
                round_index=self.round_index,
                signature=full,
            )
            if full:
                check_public_keys(ad)
            peers[ad.sender] = ad
        own = peers.get(self.site_id)
        assert self._mask_keys is not None
        assert self._enc_keys is not None
        self._require(
            own is not None
            and own.mask_public == self._mask_keys.public
            and own.encryption_public == self._enc_keys.public,
            "our own advertised keys are missing or were replaced",
        )
        keys = {k for ad in peers.values() for k in (ad.mask_public, ad.encryption_public)}
        self._require(len(keys) == 2 * len(peers), "an advertised public key is used twice")
        self._peers = peers
        holders = self._holders(self.site_id)
        self._need(len(holders), "holders of our shares")
        self._session = encoding.session_id(
            self._setup, [(s, a.mask_public, a.encryption_public) for s, a in peers.items()]
        )
        return self._share(holders)

    def _need(self, count: int, what: str, *, threshold: int | None = None) -> None:
        needed = self._config.t if threshold is None else threshold
        if count < needed:
            raise AbortedError(f"site {self.site_id!r}: only {count} {what}, need {needed}")

    def _share(self, holders: list[str]) -> ShareKeys:
        assert self._mask_keys is not None
        assert self._enc_keys is not None
        self._self_seed = self._random_bytes(SEED_SIZE)
        t, h = self._config.t, len(holders)
        self_shares, self_commit = shamir.split(
            self._self_seed, threshold=t, n_shares=h, random_bytes=self._random_bytes
        )
        key_shares, key_commit = shamir.split(
            self._mask_keys.private_bytes(),
            threshold=t,
            n_shares=h,
            random_bytes=self._random_bytes,
        )
        envelopes = []
        for holder, s_share, k_share in zip(holders, self_shares, key_shares, strict=True):
            if holder == self.site_id:
                self._held[holder] = (s_share, k_share)
                continue
            key = self._share_key(holder)
            plaintext = encoding.share_plaintext(
                sender=self.site_id, receiver=holder, self_mask=s_share, mask_key=k_share
            )
            ad = envelope_ad(
                session_id=self._session,
                stage=encoding.SHARE_STAGE,
                sender=self.site_id,
                receiver=holder,
            )
            ciphertext = seal(key, plaintext, associated_data=ad, random_bytes=self._random_bytes)
            envelopes.append(
                ShareEnvelope(sender=self.site_id, receiver=holder, ciphertext=ciphertext)
            )
        return ShareKeys(
            version=PROTOCOL_VERSION,
            session_id=self._session,
            round_index=self.round_index,
            sender=self.site_id,
            envelopes=tuple(envelopes),
            self_mask_commitment=self_commit,
            mask_key_commitment=key_commit,
        )

    def _on_shares(self, message: ShareDelivery) -> None:
        self._check_header(message, session=self._session)
        self._require(message.receiver == self.site_id, "share delivery addressed to another site")
        senders: set[str] = set()
        for envelope in message.envelopes:
            sender = envelope.sender
            self._require(envelope.receiver == self.site_id, "envelope addressed to another site")
            self._require(sender not in senders, f"two envelopes from {sender!r}")
            self._require(
                sender in self._peers and sender in self._neighbours,
                f"envelope from {sender!r}, not an advertised neighbour",
            )
            senders.add(sender)
            self._held[sender] = self._open(envelope)
        self._received_from = frozenset(senders)
        self._need(len(senders) + 1, "sites shared keys with us (including us)")

    def _share_key(self, peer: str) -> bytes:
        """The pairwise share-encryption key with ``peer`` (both directions use the same
        agreement and label): derived once per session, erased with the session."""
        key = self._share_keys.get(peer)
        if key is None:
            assert self._enc_keys is not None
            key = agree(
                self._enc_keys,
                self._peers[peer].encryption_public,
                label=LABEL_SHARE_ENCRYPTION,
                context=self._session,
            )
            self._share_keys[peer] = key
        return key

    def _open(self, envelope: ShareEnvelope) -> tuple[shamir.Share, shamir.Share]:
        sender = envelope.sender
        assert self._enc_keys is not None
        try:
            key = self._share_key(sender)
            ad = envelope_ad(
                session_id=self._session,
                stage=encoding.SHARE_STAGE,
                sender=sender,
                receiver=self.site_id,
            )
            plain = open_sealed(key, envelope.ciphertext, associated_data=ad)
            p_sender, p_receiver, s_share, k_share = encoding.parse_share_plaintext(plain)
        except CryptoError as exc:
            raise RemoteProtocolError(sender, f"share envelope rejected: {exc}") from None
        index = self._holders(sender).index(self.site_id) + 1
        if (p_sender, p_receiver) != (sender, self.site_id) or not (
            s_share.index == k_share.index == index
        ):
            raise RemoteProtocolError(sender, "share envelope has wrong names or share index")
        return s_share, k_share

    # ------------------------------------------------------------------ stage 3

    def _mask(self, encoded: Vector) -> MaskedInput:
        bits = self._config.bits
        if (
            not isinstance(encoded, np.ndarray)
            or encoded.dtype != np.uint64
            or encoded.shape != (self._length,)
        ):
            raise LocalProtocolError(f"input must be a uint64 vector of length {self._length}")
        if bits < 64 and np.any(encoded > modulus_mask(bits)):
            raise LocalProtocolError(f"input has values outside Z_2^{bits}")
        assert self._self_seed is not None
        assert self._mask_keys is not None
        terms = [self_mask_term(self._self_seed, session=self._session, site=self.site_id)]
        for peer in sorted(self._received_from):
            seed = agree(
                self._mask_keys,
                self._peers[peer].mask_public,
                label=LABEL_PAIRWISE_MASK,
                context=self._session,
            )
            sign = pairwise_sign(self.site_id, peer)
            terms.append(pairwise_mask_term(seed, session=self._session, sign=sign))
        y = apply_masks(encoded, terms, bits=bits)
        return MaskedInput(
            version=PROTOCOL_VERSION,
            session_id=self._session,
            round_index=self.round_index,
            sender=self.site_id,
            masked=y,
        )

    # ------------------------------------------------------------------ stage 4

    def _on_consistency(self, message: ConsistencyRequest) -> ConsistencySignature:
        self._check_header(message, session=self._session)
        survivors = self._check_ids("survivor list", message.survivors)
        self._require(self.site_id in survivors, "survivor list omits us")
        missing = sorted((survivors & self._neighbours) - self._received_from)
        self._require(not missing, f"survivors {missing} never shared keys with us")
        self._need(len(survivors), "survivors", threshold=self._config.quorum)
        self._need(len(survivors & (self._neighbours | {self.site_id})), "surviving holders")
        self._signed_survivors = tuple(sorted(survivors))
        signature = self._identity.sign(self._consistency_payload(), label=LABEL_CONSISTENCY)
        return ConsistencySignature(
            version=PROTOCOL_VERSION,
            session_id=self._session,
            round_index=self.round_index,
            sender=self.site_id,
            signature=signature,
        )

    def _consistency_payload(self) -> bytes:
        return encoding.consistency_payload(
            session=self._session,
            round_index=self.round_index,
            survivors=self._signed_survivors,
            context_hash=self._context_hash,
        )

    # ------------------------------------------------------------------ stage 5

    def _on_unmask(self, message: UnmaskRequest) -> UnmaskResponse:
        self._check_header(message, session=self._session)
        alive = self._check_ids("alive list", message.alive)
        dropped = self._check_ids("dropped list", message.dropped)
        self._require(
            not (alive & dropped), f"sites both alive and dropped: {sorted(alive & dropped)}"
        )
        self._require(
            alive == frozenset(self._signed_survivors),
            "alive list differs from the survivor set we signed",
        )
        listed = (alive | dropped) & self._neighbours
        self._require(
            listed == self._received_from,
            "alive/dropped lists contradict which neighbours shared keys with us",
        )
        self._count_signatures(message)
        return self._reveal(alive)

    def _count_signatures(self, message: UnmaskRequest) -> None:
        payload = self._consistency_payload()
        valid: set[str] = set()
        for item in message.signatures:
            if item.site in valid or item.site not in self._signed_survivors:
                continue
            try:
                verify_signature(
                    self._roster.public_key(item.site),
                    payload,
                    item.signature,
                    label=LABEL_CONSISTENCY,
                )
            except CryptoError:
                continue
            valid.add(item.site)
        self._need(
            len(valid), "valid identical consistency signatures", threshold=self._config.quorum
        )

    def _reveal(self, alive: frozenset[str]) -> UnmaskResponse:
        self_mask_shares: list[RevealedShare] = []
        mask_key_shares: list[RevealedShare] = []
        for owner in sorted(self._received_from | {self.site_id}):
            s_share, k_share = self._held[owner]
            if owner in alive:
                share, bucket = s_share, self_mask_shares
            else:
                share, bucket = k_share, mask_key_shares
            bucket.append(RevealedShare(owner=owner, index=share.index, value=share.value))
        return UnmaskResponse(
            version=PROTOCOL_VERSION,
            session_id=self._session,
            round_index=self.round_index,
            sender=self.site_id,
            self_mask_shares=tuple(self_mask_shares),
            mask_key_shares=tuple(mask_key_shares),
        )


_PROBE = AgreementKeyPair.from_private_bytes(b"\x01" * 32)
_MEMO_SIZE = 1 << 14
"""Successful public checks remembered per process (a few rounds of n = 1000 sites)."""


# Memoised public checks. Only successes are remembered (``lru_cache`` does not cache a
# raised error), keyed by every byte the check reads; both checks are deterministic
# functions of those bytes (RFC 7748 X25519, RFC 8032 Ed25519 verification), so a hit is
# exactly what a fresh check would return. Nothing secret enters a key. In a deployment a
# site's process holds only its own checks; in an in-process simulation the sites of one
# process (each verifying the same advertisements and consistency signatures: about
# n * k of them per round) share the result of the same public computation.
@functools.lru_cache(maxsize=_MEMO_SIZE)
def _verified(public: bytes, message: bytes, signature: bytes, label: bytes) -> bool:
    verify(public, message, signature, label=label)  # CryptoError: not remembered
    return True


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _not_low_order(public: bytes) -> bool:
    agree(_PROBE, public, label=LABEL_PAIRWISE_MASK, context=b"low-order probe")
    return True


def verify_signature(public: bytes, message: bytes, signature: bytes, *, label: bytes) -> None:
    """``crypto.signing.verify`` (``CryptoError`` unless valid), memoised on success."""
    _verified(bytes(public), bytes(message), bytes(signature), bytes(label))


def check_public_keys(ad: AdvertiseKeys) -> None:
    """``RemoteProtocolError`` naming ``ad.sender`` if an advertised key is of low order.

    X25519 with a low-order point yields the all-zero secret for *every* private
    key (RFC 7748 section 6.1), so a probe with any fixed scalar detects it; a
    corrupt site could otherwise force a known pairwise seed or make honest
    sites fail later. (Memoised on success per process, ``_not_low_order``.)
    """
    for public in (ad.mask_public, ad.encryption_public):
        try:
            _not_low_order(bytes(public))
        except CryptoError:
            raise RemoteProtocolError(ad.sender, "advertised a low-order public key") from None


def verify_advertisement(
    ad: AdvertiseKeys, *, roster: Roster, setup: bytes, round_index: int, signature: bool = True
) -> None:
    """``RemoteProtocolError`` naming ``ad.sender`` unless ``ad`` is valid for this setup.

    Valid: sender on the roster, header of this version/setup/round, and (if
    ``signature``) an Ed25519 signature by the sender's roster key over
    ``advertisement_payload``.
    """
    if ad.sender not in roster:
        raise RemoteProtocolError(ad.sender, "advertisement from a site not on the roster")
    if (ad.version, ad.session_id, ad.round_index) != (PROTOCOL_VERSION, setup, round_index):
        raise RemoteProtocolError(ad.sender, "advertisement for another version, setup or round")
    if not signature:
        return
    payload = encoding.advertisement_payload(
        setup=setup,
        round_index=round_index,
        site=ad.sender,
        mask_public=ad.mask_public,
        encryption_public=ad.encryption_public,
    )
    try:
        verify_signature(
            roster.public_key(ad.sender), payload, ad.signature, label=LABEL_KEY_ADVERTISEMENT
        )
    except CryptoError:
        raise RemoteProtocolError(ad.sender, "advertisement signature does not verify") from None
