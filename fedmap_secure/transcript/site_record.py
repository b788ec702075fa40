"""A site's own record of a round, to cross-check the server's transcript.

Each site keeps, per round, the digests (``message_hash.message_digest``) of
every message it sent and received, the context hash it signed, the survivor
set and consistency signature it signed, and which share kind it revealed
for which owner. ``cross_check(transcript, record)`` then proves, for that
site, that the server's transcript neither invents, drops nor alters any of
its messages, shows it the context and survivor set it really signed, and
reports the shares it really revealed. A server that rewrites its transcript
after the fact (for messages whose content it does not keep, such as masked
inputs and share envelopes) is caught by any one honest site's record.

``RecordingClientSession`` is a drop-in ``ClientSession`` that keeps such a
record; it changes nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto.hashing import DIGEST_SIZE
from fedmap_secure.crypto.signing import IdentityKey
from fedmap_secure.errors import TranscriptError
from fedmap_secure.secagg.client import ClientSession
from fedmap_secure.secagg.config import RingSpec, Roster, SecAggConfig
from fedmap_secure.secagg.encoding import context_digest
from fedmap_secure.secagg.masking import Vector
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    ServerMessage,
    UnmaskResponse,
)
from fedmap_secure.transcript.message_hash import message_digest
from fedmap_secure.transcript.records import (
    MESSAGE_KINDS,
    Direction,
    RoundTranscript,
    ShareKind,
)

OUTCOMES = frozenset({"completed", "aborted", "failed", "unknown"})
Logged = tuple[tuple[str, bytes], ...]
"""(message kind, digest) in the order the site saw them."""


@dataclass(frozen=True, kw_only=True)
class SiteRecord:
    """What one site saw and signed in one round (no secret: digests and public values)."""

    site: str
    round_index: int
    context_hash: bytes
    sent: Logged
    received: Logged
    signed_survivors: tuple[str, ...]
    consistency_signature: bytes
    revealed: tuple[tuple[str, ShareKind], ...]
    # How the round ended for this site: "completed" (the server announced the round
    # completed), "aborted", "failed" (the site lost or refused it) or "unknown".
    outcome: str = "unknown"

    def __post_init__(self) -> None:
        def bad(what: str) -> TranscriptError:
            return TranscriptError(f"malformed site record: {what}", site=str(self.site))

        if not isinstance(self.site, str) or not self.site:
            raise bad("site must be a non-empty string")
        if isinstance(self.round_index, bool) or not isinstance(self.round_index, int):
            raise bad("round_index must be an int")
        if self.round_index < 0:
            raise bad("round_index must be >= 0")
        if not isinstance(self.context_hash, bytes) or len(self.context_hash) != DIGEST_SIZE:
            raise bad("context_hash must be 32 bytes")
        for kind, digest in (*self.sent, *self.received):
            if (
                kind not in MESSAGE_KINDS
                or not isinstance(digest, bytes)
                or len(digest) != DIGEST_SIZE
            ):
                raise bad(f"bad message entry ({kind!r})")
        if not all(isinstance(k, ShareKind) for _, k in self.revealed):
            raise bad("revealed kinds must be ShareKind")
        if self.outcome not in OUTCOMES:
            raise bad(f"outcome must be one of {sorted(OUTCOMES)}")

    @property
    def unmasked(self) -> bool:
        """Whether the round may have been unmasked with this site's help (or completed)."""
        return self.outcome == "completed" or (self.outcome != "aborted" and bool(self.revealed))

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "round_index": self.round_index,
            "context_hash": self.context_hash.hex(),
            "sent": [[k, d.hex()] for k, d in self.sent],
            "received": [[k, d.hex()] for k, d in self.received],
            "signed_survivors": list(self.signed_survivors),
            "consistency_signature": self.consistency_signature.hex(),
            "revealed": [[o, k.value] for o, k in self.revealed],
            "outcome": self.outcome,
        }

    @classmethod
    def from_json(cls, data: Any) -> SiteRecord:
        """Parse ``to_json``'s form; ``TranscriptError`` if malformed."""
        try:
            return cls(
                site=str(data["site"]),
                round_index=int(data["round_index"]),
                context_hash=bytes.fromhex(data["context_hash"]),
                sent=tuple((str(k), bytes.fromhex(d)) for k, d in data["sent"]),
                received=tuple((str(k), bytes.fromhex(d)) for k, d in data["received"]),
                signed_survivors=tuple(str(s) for s in data["signed_survivors"]),
                consistency_signature=bytes.fromhex(data["consistency_signature"]),
                revealed=tuple((str(o), ShareKind(k)) for o, k in data["revealed"]),
                outcome=str(data.get("outcome", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TranscriptError(f"malformed site record: {type(exc).__name__}: {exc}") from None


class SiteRecorder:
    """Builds a ``SiteRecord`` from the messages one site sends and receives."""

    def __init__(self, *, site: str, round_index: int, context: bytes) -> None:
        self._site = site
        self._round = round_index
        self._context_hash = context_digest(context)
        self._sent: list[tuple[str, bytes]] = []
        self._received: list[tuple[str, bytes]] = []
        self._survivors: tuple[str, ...] = ()
        self._offered: tuple[str, ...] = ()
        self._signature = b""
        self._revealed: list[tuple[str, ShareKind]] = []

    def on_received(self, message: ServerMessage | ClientMessage) -> None:
        self._received.append((type(message).__name__, message_digest(message)))
        if isinstance(message, ConsistencyRequest):
            self._offered = message.survivors

    def on_sent(self, message: ClientMessage) -> None:
        self._sent.append((type(message).__name__, message_digest(message)))
        if isinstance(message, ConsistencySignature):
            self._survivors, self._signature = self._offered, message.signature
        elif isinstance(message, UnmaskResponse):
            self._revealed += [(s.owner, ShareKind.SELF_MASK) for s in message.self_mask_shares]
            self._revealed += [(s.owner, ShareKind.MASK_KEY) for s in message.mask_key_shares]

    def record(self) -> SiteRecord:
        return SiteRecord(
            site=self._site,
            round_index=self._round,
            context_hash=self._context_hash,
            sent=tuple(self._sent),
            received=tuple(self._received),
            signed_survivors=self._survivors,
            consistency_signature=self._signature,
            revealed=tuple(self._revealed),
        )


class RecordingClientSession(ClientSession):
    """A ``ClientSession`` that logs its traffic into a ``SiteRecorder``."""

    def __init__(
        self,
        *,
        recorder: SiteRecorder,
        site_id: str,
        identity: IdentityKey,
        roster: Roster,
        config: SecAggConfig,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        random_bytes: Callable[[int], bytes],
        ring: RingSpec | None = None,
    ) -> None:
        super().__init__(
            site_id=site_id,
            identity=identity,
            roster=roster,
            config=config,
            layout=layout,
            round_index=round_index,
            context=context,
            random_bytes=random_bytes,
            ring=ring,
        )
        self.recorder = recorder

    def start(self) -> AdvertiseKeys:
        out = super().start()
        self.recorder.on_sent(out)
        return out

    def receive(self, message: ServerMessage | ClientMessage) -> ClientMessage | None:
        self.recorder.on_received(message)
        out = super().receive(message)
        if out is not None:
            self.recorder.on_sent(out)
        return out

    def submit_input(self, encoded: Vector) -> MaskedInput:
        out = super().submit_input(encoded)
        self.recorder.on_sent(out)
        return out


def cross_check(transcript: RoundTranscript, record: SiteRecord) -> None:
    """Raise ``TranscriptError`` where the server's transcript contradicts ``record``."""
    site, r = record.site, transcript.round_index

    def fail(what: str, message: str | None = None) -> TranscriptError:
        return TranscriptError(what, round_index=r, site=site, message=message)

    if record.round_index != r:
        raise fail(f"site record is for round {record.round_index}")
    if record.context_hash != transcript.context_hash:
        raise fail("the site signed another model/context hash than the transcript's")
    for direction, logged in ((Direction.RECEIVED, record.sent), (Direction.SENT, record.received)):
        server = [
            (m.kind, m.digest)
            for m in transcript.messages
            if m.peer == site and m.direction is direction
        ]
        for kind, digest in logged:
            if (kind, digest) not in server:
                raise fail(
                    f"missing or altered in the server's transcript ({direction.value})", kind
                )
        for kind, digest in server if direction is Direction.RECEIVED else ():
            # a message sent to a site that had dropped never reached it: not a contradiction
            if (kind, digest) not in logged:
                raise fail("the server claims a message the site never sent", kind)
    view = transcript.view_of(site)
    if record.consistency_signature:
        if view is None:
            raise fail("the site signed a survivor set but the transcript has no view for it")
        if (
            view.survivors != record.signed_survivors
            or view.signature != record.consistency_signature
        ):
            raise fail("the transcript's survivor view differs from what the site signed")
    elif view is not None:
        raise fail("the transcript shows a consistency signature the site never made")
    revealed = {(x.owner, x.kind) for x in transcript.reveals if x.responder == site}
    if revealed != set(record.revealed):
        raise fail("the transcript's revealed shares differ from what the site revealed")
