"""The server side of transcripts: record every message of a round, chain the rounds.

``RoundRecorder`` is told each message the server received (and whether it
accepted it) and each message it sent; ``finish`` turns that into a
``RoundTranscript``. ``RecordingServerSession`` is a drop-in ``ServerSession``
that feeds a recorder (any driver, in-process or gRPC, can construct it
instead of ``ServerSession``), and ``TranscriptChain`` links the rounds and
hands each finished transcript to a sink (e.g. ``store.TranscriptWriter``).

What is recorded is derived from the messages themselves, never from the
server's internal state: the advertisements are those the server put in its
KeyBroadcast, each signer's view is the ConsistencyRequest the server sent
it plus the ConsistencySignature it accepted from it, survivors and dropped
are those of the UnmaskRequest, reveals are the (owner, kind) pairs of each
accepted UnmaskResponse. Only completed rounds produce a transcript; an
aborted round leaves the chain where it was (its sites revealed no share or
only the shares of the one quorum survivor set, SPEC §8).
"""

from __future__ import annotations

from collections.abc import Callable

from fedmap_secure.aggregation import VectorLayout
from fedmap_secure.crypto.prg import Workers
from fedmap_secure.errors import LocalProtocolError, RemoteProtocolError
from fedmap_secure.secagg.config import RingSpec, Roster, SecAggConfig, layout_digest
from fedmap_secure.secagg.encoding import context_digest
from fedmap_secure.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    ConsistencyRequest,
    ConsistencySignature,
    KeyBroadcast,
    ServerMessage,
    UnmaskRequest,
    UnmaskResponse,
)
from fedmap_secure.secagg.server import RoundOutput, ServerSession
from fedmap_secure.transcript.binding import aggregate_digest, bound_context_hash
from fedmap_secure.transcript.message_hash import message_digest
from fedmap_secure.transcript.records import (
    GENESIS,
    TRANSCRIPT_VERSION,
    Advertisement,
    Direction,
    MessageEntry,
    Reveal,
    RoundTranscript,
    ShareKind,
    SiteView,
)


class TranscriptChain:
    """The recorded rounds of one run, each linked to the one before.

    ``sink`` is called with every transcript as it is appended (the file
    adapter writes it there); ``head`` resumes a chain from an earlier run.
    """

    def __init__(
        self,
        *,
        head: RoundTranscript | None = None,
        sink: Callable[[RoundTranscript], None] | None = None,
    ) -> None:
        self._head = head
        self._sink = sink
        self._transcripts: list[RoundTranscript] = []

    @property
    def head(self) -> RoundTranscript | None:
        return self._head

    @property
    def previous_hash(self) -> bytes:
        return GENESIS if self._head is None else self._head.transcript_hash()

    @property
    def previous_sections(self) -> tuple[tuple[str, bytes], ...]:
        if self._head is None:
            return ()
        return tuple(self._head.section_digests().items())

    @property
    def transcripts(self) -> tuple[RoundTranscript, ...]:
        return tuple(self._transcripts)

    def append(self, transcript: RoundTranscript) -> None:
        """Add the next round; ``LocalProtocolError`` if it does not link to the head."""
        if transcript.previous_hash != self.previous_hash:
            raise LocalProtocolError(
                f"round {transcript.round_index} transcript does not link to the chain head"
            )
        self._head = transcript
        self._transcripts.append(transcript)
        if self._sink is not None:
            self._sink(transcript)


class RoundRecorder:
    """Collects what the server received and sent in one round (sans-I/O)."""

    def __init__(
        self,
        *,
        roster: Roster,
        config: SecAggConfig,
        layout: VectorLayout,
        round_index: int,
        model_hash: bytes,
        setup_id: bytes,
        ring: RingSpec | None = None,
        previous_hash: bytes,
        previous_sections: tuple[tuple[str, bytes], ...],
    ) -> None:
        self.round_index = round_index
        self._config = config
        self._roster_digest = roster.digest()
        self._layout_digest = layout_digest(layout, ring)
        self._model_hash = model_hash
        self._context_hash = bound_context_hash(model_hash, previous_hash)
        self._setup_id = setup_id
        self._previous = (previous_hash, previous_sections)
        self._messages: list[MessageEntry] = []
        self._broadcast: KeyBroadcast | None = None
        self._requests: dict[str, ConsistencyRequest] = {}
        self._signatures: dict[str, bytes] = {}
        self._unmask: UnmaskRequest | None = None
        self._reveals: list[Reveal] = []

    def received(self, message: ClientMessage | ServerMessage, *, accepted: bool) -> None:
        """Record a message from a site, and what it contributes if the server accepted it."""
        self._log(Direction.RECEIVED, message.sender, message, accepted)
        if not accepted:
            return
        if isinstance(message, ConsistencySignature):
            self._signatures[message.sender] = message.signature
        elif isinstance(message, UnmaskResponse):
            self._reveals += [
                Reveal(responder=message.sender, owner=s.owner, kind=ShareKind.SELF_MASK)
                for s in message.self_mask_shares
            ]
            self._reveals += [
                Reveal(responder=message.sender, owner=s.owner, kind=ShareKind.MASK_KEY)
                for s in message.mask_key_shares
            ]

    def sent(self, recipient: str, message: ServerMessage) -> None:
        """Record a message the server sent to ``recipient``."""
        self._log(Direction.SENT, recipient, message, True)
        if isinstance(message, KeyBroadcast):
            self._broadcast = message
        elif isinstance(message, ConsistencyRequest):
            self._requests[recipient] = message
        elif isinstance(message, UnmaskRequest):
            self._unmask = message

    def _log(
        self, direction: Direction, peer: str, message: ClientMessage | ServerMessage, ok: bool
    ) -> None:
        entry = MessageEntry(
            direction=direction,
            kind=type(message).__name__,
            peer=peer,
            digest=message_digest(message),
            accepted=ok,
        )
        self._messages.append(entry)

    def finish(
        self, *, session_id: bytes, output: RoundOutput, excluded: frozenset[str]
    ) -> RoundTranscript:
        """The transcript of the completed round."""
        if self._broadcast is None or self._unmask is None:
            raise LocalProtocolError("a transcript needs a round that reached the unmask stage")
        previous_hash, previous_sections = self._previous
        return RoundTranscript(
            version=TRANSCRIPT_VERSION,
            round_index=self.round_index,
            previous_hash=previous_hash,
            previous_sections=previous_sections,
            config=self._config,
            config_digest=self._config.digest(),
            roster_digest=self._roster_digest,
            layout_digest=self._layout_digest,
            model_hash=self._model_hash,
            context_hash=self._context_hash,
            setup_id=self._setup_id,
            session_id=session_id,
            advertisements=tuple(_advertisement(a) for a in self._broadcast.advertisements),
            survivors=self._unmask.alive,
            dropped=self._unmask.dropped,
            views=self._views(),
            reveals=tuple(self._reveals),
            messages=tuple(self._messages),
            excluded=tuple(sorted(excluded)),
            aggregate_hash=aggregate_digest(
                output.total, bits=self._config.bits, contributors=output.contributors
            ),
        )

    def _views(self) -> tuple[SiteView, ...]:
        return tuple(
            SiteView(
                site=site,
                context_hash=self._context_hash,
                survivors=self._requests[site].survivors,
                signature=signature,
            )
            for site, signature in sorted(self._signatures.items())
            if site in self._requests
        )


def _advertisement(ad: AdvertiseKeys) -> Advertisement:
    return Advertisement(
        site=ad.sender,
        mask_public=ad.mask_public,
        encryption_public=ad.encryption_public,
        signature=ad.signature,
    )


class RecordingServerSession(ServerSession):
    """A ``ServerSession`` that records its round into a ``TranscriptChain``.

    ``model_hash`` is the digest of the caller's round context; the session is
    run with the bound context (``binding.bound_context``) so that the sites'
    consistency signatures cover the previous transcript hash. Behaviour is
    otherwise exactly ``ServerSession``'s: every error propagates unchanged.
    """

    def __init__(
        self,
        *,
        chain: TranscriptChain,
        model_hash: bytes,
        roster: Roster,
        config: SecAggConfig,
        layout: VectorLayout,
        round_index: int,
        context: bytes,
        ring: RingSpec | None = None,
        workers: Workers | None = None,
    ) -> None:
        if context_digest(context) != bound_context_hash(model_hash, chain.previous_hash):
            raise LocalProtocolError(
                f"round {round_index}: the context must be bound_context(model_hash, chain head)"
            )
        super().__init__(
            roster=roster,
            config=config,
            layout=layout,
            round_index=round_index,
            context=context,
            ring=ring,
            workers=workers,
        )
        self._chain = chain
        self._recorder = RoundRecorder(
            roster=roster,
            config=config,
            layout=layout,
            round_index=round_index,
            model_hash=model_hash,
            setup_id=self.setup_id,
            ring=ring,
            previous_hash=chain.previous_hash,
            previous_sections=chain.previous_sections,
        )

    def receive(self, message: ClientMessage | ServerMessage) -> None:
        try:
            super().receive(message)
        except RemoteProtocolError:
            self._recorder.received(message, accepted=False)
            raise
        self._recorder.received(message, accepted=True)

    def close_stage(self) -> dict[str, ServerMessage]:
        outgoing = super().close_stage()
        for recipient in sorted(outgoing):
            self._recorder.sent(recipient, outgoing[recipient])
        return outgoing

    def finish(self) -> RoundOutput:
        session, excluded = self.session_id, self.excluded
        output = super().finish()
        transcript = self._recorder.finish(session_id=session, output=output, excluded=excluded)
        self._chain.append(transcript)
        return output


def server_session(
    *,
    chain: TranscriptChain | None,
    model_hash: bytes,
    roster: Roster,
    config: SecAggConfig,
    layout: VectorLayout,
    round_index: int,
    context: bytes,
    ring: RingSpec | None,
    workers: Workers | None = None,
) -> ServerSession:
    """The round's server session: recording into ``chain`` when there is one (``context``
    is then the bound context of ``model_hash`` and the chain head), else a plain one."""
    if chain is None:
        return ServerSession(
            roster=roster,
            config=config,
            layout=layout,
            round_index=round_index,
            context=context,
            ring=ring,
            workers=workers,
        )
    return RecordingServerSession(
        chain=chain,
        model_hash=model_hash,
        roster=roster,
        config=config,
        layout=layout,
        round_index=round_index,
        context=context,
        ring=ring,
        workers=workers,
    )
